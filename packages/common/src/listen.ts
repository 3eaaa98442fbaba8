import type net from 'node:net';

/**
 * Starts `server` listening on host:port (port 0 = any free port) and resolves with the
 * port it got; rejects with the listen error (EADDRINUSE, EACCES, ...) instead of letting
 * it escape as an 'error' event.
 */
export async function listenOn(server: net.Server, port: number, host: string): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return (server.address() as net.AddressInfo).port;
}
