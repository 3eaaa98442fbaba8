import net from 'node:net';

/**
 * A TCP relay in front of a server, for tests: `cut()` drops every connection and stops
 * listening, which is what a dead node looks like from the outside. (Shutting the gRPC
 * server down in-process is not enough: grpc-js 1.14 with channelz disabled keeps the
 * sessions it already has open after forceShutdown.)
 */
export class TcpRelay {
  private constructor(
    private readonly server: net.Server,
    private readonly sockets: Set<net.Socket>,
    readonly address: string,
  ) {}

  static async start(targetPort: number): Promise<TcpRelay> {
    const sockets = new Set<net.Socket>();
    const server = net.createServer((inbound) => {
      const outbound = net.connect(targetPort, '127.0.0.1');
      for (const socket of [inbound, outbound]) {
        sockets.add(socket);
        socket.on('close', () => sockets.delete(socket));
        socket.on('error', () => {
          inbound.destroy();
          outbound.destroy();
        });
      }
      inbound.pipe(outbound);
      outbound.pipe(inbound);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    return new TcpRelay(server, sockets, `127.0.0.1:${port}`);
  }

  /** Drops every connection and refuses new ones. */
  async cut(): Promise<void> {
    if (!this.server.listening) return;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    await closed;
  }
}
