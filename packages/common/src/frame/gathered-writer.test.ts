// Proves GatheredWriter over a real TCP connection whose reader stops reading: everything written (headers, payloads, payload parts) arrives in order and intact, and with the written hook the writer counts the buffers not written out yet (more than zero while the peer reads nothing, back to zero with one hook call per buffer once it reads), while without the hook it counts nothing.
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { GatheredWriter } from './gathered-writer.js';

const KiB = 1024;

/** A connected pair: `writer` on this side, `reader` paused (it reads nothing yet). */
async function pair(): Promise<{ writer: net.Socket; reader: net.Socket; close: () => void }> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const writer = net.connect({
    host: '127.0.0.1',
    port: (server.address() as net.AddressInfo).port,
  });
  await new Promise<void>((resolve) => writer.once('connect', () => resolve()));
  const reader = await accepted;
  reader.pause();
  return {
    writer,
    reader,
    close: () => {
      writer.destroy();
      reader.destroy();
      server.close();
    },
  };
}

test('with the written hook, buffers not written out are counted until the peer reads them; bytes arrive in order', async () => {
  const { writer, reader, close } = await pair();
  try {
    let writtenCalls = 0;
    const gathered = new GatheredWriter(writer, {
      written: () => {
        writtenCalls += 1;
      },
    });
    const expected: Buffer[] = [];
    let buffers = 0;
    // 600 frames of a 16 B header and a 64 KiB payload in two parts (~38 MiB): far more
    // than the kernel buffers take while the reader reads nothing.
    for (let i = 0; i < 600; i += 1) {
      const header = Buffer.alloc(16, i % 251);
      const parts = [
        Buffer.alloc(48 * KiB, (i + 1) % 251),
        Buffer.alloc(0),
        Buffer.alloc(16 * KiB, (i + 2) % 251),
      ];
      gathered.write(header, parts);
      expected.push(header, ...parts);
      buffers += 3; // the empty part is not written
    }
    gathered.write(Buffer.from('end'), undefined);
    expected.push(Buffer.from('end'));
    buffers += 1;
    assert.equal(gathered.unsentBuffers, buffers, 'all counted as soon as they are written');
    await sleep(100);
    assert.ok(gathered.unsentBuffers > 0, 'the peer reads nothing: some are still unsent');
    assert.equal(writtenCalls + gathered.unsentBuffers, buffers);

    const want = Buffer.concat(expected);
    const received: Buffer[] = [];
    let receivedBytes = 0;
    const all = new Promise<void>((resolve) =>
      reader.on('data', (chunk: Buffer) => {
        received.push(chunk);
        receivedBytes += chunk.length;
        if (receivedBytes >= want.length) resolve();
      }),
    );
    reader.resume();
    await all;
    assert.ok(Buffer.concat(received).equals(want), 'every byte, in order');
    for (let i = 0; gathered.unsentBuffers > 0 && i < 200; i += 1) await sleep(5);
    assert.equal(gathered.unsentBuffers, 0);
    assert.equal(writtenCalls, buffers, 'one hook call per buffer');
  } finally {
    close();
  }
});

test('without the hook nothing is counted, and payloads still arrive intact', async () => {
  const { writer, reader, close } = await pair();
  try {
    const gathered = new GatheredWriter(writer);
    gathered.write(Buffer.from('head:'), Buffer.from('payload'));
    gathered.write(Buffer.from('|two:'), [Buffer.from('a'), Buffer.from('b')]);
    assert.equal(gathered.unsentBuffers, 0);
    const want = 'head:payload|two:ab';
    let got = '';
    reader.setEncoding('latin1');
    reader.resume();
    await new Promise<void>((resolve) =>
      reader.on('data', (chunk: string) => {
        got += chunk;
        if (got.length >= want.length) resolve();
      }),
    );
    assert.equal(got, want);
  } finally {
    close();
  }
});
