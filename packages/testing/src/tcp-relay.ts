import net from 'node:net';

interface Pair {
  readonly client: net.Socket;
  readonly upstream: net.Socket;
}

/**
 * A TCP relay in front of one server, for fault tests: a test can reset its connections
 * (`dropConnections`), freeze them (`freeze`/`thaw`: bytes stop flowing, the connections stay
 * up, as with a SIGSTOPped peer), or `cut` it (every connection closed and no new ones: what a
 * dead node looks like from the outside; shutting a gRPC server down in-process is not enough,
 * since grpc-js 1.14 with channelz disabled keeps the sessions it already has open after
 * forceShutdown).
 */
export class TcpRelay {
  private readonly pairs = new Set<Pair>();
  private frozen = false;
  private accepted = 0;

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
  ) {}

  /** Client connections accepted so far. */
  get acceptedCount(): number {
    return this.accepted;
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  static async start(target: { host: string; port: number }): Promise<TcpRelay> {
    let proxy: TcpRelay | undefined;
    const server = net.createServer((client) => {
      if (proxy === undefined) client.destroy();
      else proxy.accept(client, target);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    proxy = new TcpRelay(server, (server.address() as net.AddressInfo).port);
    return proxy;
  }

  private accept(client: net.Socket, target: { host: string; port: number }): void {
    this.accepted += 1;
    const pair: Pair = { client, upstream: net.connect(target.port, target.host) };
    this.pairs.add(pair);
    const drop = (): void => {
      pair.client.destroy();
      pair.upstream.destroy();
      this.pairs.delete(pair);
    };
    for (const socket of [pair.client, pair.upstream]) {
      socket.on('error', drop);
      socket.on('close', drop);
    }
    if (this.frozen) {
      pair.client.pause();
      pair.upstream.pause();
    } else {
      connect(pair);
    }
  }

  /** Resets every open connection (clients see the stream break and must reconnect). */
  dropConnections(): void {
    for (const pair of this.pairs) {
      pair.client.resetAndDestroy();
      pair.upstream.resetAndDestroy();
    }
    this.pairs.clear();
  }

  /** Stops moving bytes either way; connections stay open, as with a frozen (SIGSTOPped) peer. */
  freeze(): void {
    this.frozen = true;
    for (const pair of this.pairs) {
      pair.client.unpipe(pair.upstream);
      pair.upstream.unpipe(pair.client);
      pair.client.pause();
      pair.upstream.pause();
    }
  }

  /** Moves bytes again, starting with those held while frozen. */
  thaw(): void {
    this.frozen = false;
    for (const pair of this.pairs) connect(pair);
  }

  /** Closes every connection and refuses new ones; a second call does nothing. */
  async cut(): Promise<void> {
    if (!this.server.listening) return;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const pair of this.pairs) {
      pair.client.destroy();
      pair.upstream.destroy();
    }
    this.pairs.clear();
    await closed;
  }

  /** Resets every connection and stops listening. */
  async close(): Promise<void> {
    this.dropConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

function connect(pair: Pair): void {
  pair.client.pipe(pair.upstream);
  pair.upstream.pipe(pair.client);
}
