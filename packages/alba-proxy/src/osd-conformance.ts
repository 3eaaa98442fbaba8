import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { crc32c, ShaleError } from '@shale/common';
import type { Osd } from './osd.js';

/**
 * The OSD contract, as one suite every implementation runs (today AsdOsd over a real ASD;
 * later a backend acting as an OSD). `makeOsd` gives a fresh, empty OSD per test.
 */
export function osdConformance(
  name: string,
  makeOsd: () => Promise<{ osd: Osd; done: () => Promise<void> }>,
): void {
  const k = (text: string): Buffer => Buffer.from(text);
  const frag = (text: string, value: Buffer) => ({ key: k(text), value, crc32c: crc32c(value) });

  async function withOsd(body: (osd: Osd) => Promise<void>): Promise<void> {
    const { osd, done } = await makeOsd();
    try {
      await body(osd);
    } finally {
      await done();
    }
  }

  describe(`OSD conformance: ${name}`, () => {
    test('fragments round-trip whole and by range; a missing one answers for itself', () =>
      withOsd(async (osd) => {
        const big = randomBytes(300_000);
        const small = randomBytes(100);
        await osd.putFragments([frag('ns/1/0/0', big), frag('ns/1/0/1', small)]);
        const [a, b, missing] = await osd.getFragments([
          k('ns/1/0/0'),
          k('ns/1/0/1'),
          k('ns/1/0/9'),
        ]);
        assert.ok(a?.ok && a.value.equals(big));
        assert.ok(b?.ok && b.value.equals(small));
        assert.ok(missing !== undefined && !missing.ok);
        const ranges = await osd.getFragmentRanges([
          { key: k('ns/1/0/0'), offset: 123_456, length: 4096 },
          { key: k('ns/1/0/1'), offset: 90, length: 10 },
        ]);
        assert.ok(ranges[0]?.ok && ranges[0].value.equals(big.subarray(123_456, 127_552)));
        assert.ok(ranges[1]?.ok && ranges[1].value.equals(small.subarray(90)));
      }));

    test('a put with a wrong CRC32C stores nothing of the call', () =>
      withOsd(async (osd) => {
        const good = randomBytes(1000);
        const bad = { key: k('ns/2/0/1'), value: randomBytes(1000), crc32c: 12345 };
        await assert.rejects(
          osd.putFragments([frag('ns/2/0/0', good), bad]),
          (err: unknown) => err instanceof ShaleError,
        );
        const [first] = await osd.getFragments([k('ns/2/0/0')]);
        assert.ok(
          first !== undefined && !first.ok,
          'the good fragment of the refused call is absent',
        );
      }));

    test('delete removes fragments; deleting absent ones is not an error', () =>
      withOsd(async (osd) => {
        await osd.putFragments([frag('ns/3/0/0', randomBytes(10))]);
        await osd.deleteFragments([k('ns/3/0/0'), k('ns/3/0/7')]);
        const [gone] = await osd.getFragments([k('ns/3/0/0')]);
        assert.ok(gone !== undefined && !gone.ok);
      }));

    test('list pages through a prefix in key order', () =>
      withOsd(async (osd) => {
        const keys = Array.from({ length: 7 }, (_, i) => `ns/4/${i}/0`);
        await osd.putFragments([...keys, 'ns/5/0/0'].map((key) => frag(key, Buffer.from(key))));
        const seen: string[] = [];
        let after: Buffer | undefined;
        for (;;) {
          const page = await osd.listFragments(k('ns/4/'), after, 3);
          seen.push(...page.keys.map((key) => key.toString()));
          if (!page.more) break;
          after = page.keys.at(-1);
        }
        assert.deepEqual(seen, keys);
      }));

    test('capacity reports what is stored', () =>
      withOsd(async (osd) => {
        const before = await osd.capacity();
        await osd.putFragments([frag('ns/6/0/0', randomBytes(50_000))]);
        const after = await osd.capacity();
        assert.equal(after.usedBytes - before.usedBytes, 50_000);
        assert.ok(after.capacityBytes > 0);
        assert.ok(after.freeBytes <= after.capacityBytes);
      }));
  });
}
