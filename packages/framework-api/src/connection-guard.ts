/**
 * Who holds the API's TCP connections, and who goes when they run out. Node's own cap
 * (server.maxConnections) refuses the newest connection, so whoever opened the cap's worth
 * of connections that never finish their headers locks everybody else out for as long as
 * they hold them. Here the newest connection is admitted and an old one that is not serving
 * a request goes instead:
 *
 *   accepted ──headers of a request──> busy ──answer written──> idle (keep-alive)
 *       │                               ^                         │
 *       │                               └──────next request───────┘
 *       └─(408, 400, or an answer that closes)─> closing ──client FIN, linger, drain cap──> closed
 *
 * Admission of a new connection from address A:
 *   1. A holds connectionsPerClientMax: A's own oldest evictable connection goes, else refused.
 *   2. connectionsMax are held: the oldest evictable connection of anyone goes, else refused.
 * Evictable, first to last: closing (already answered), never finished a request's headers
 * (a stall, or a client that has not spoken yet), idle keep-alive; never a busy one. Within
 * a class the oldest goes. A real client sends its headers in one packet, so a stall attack
 * evicts its own connections long before it reaches a new real one (it would have to open
 * connectionsMax connections in the time the real client needs to send one packet).
 *
 * Every client may be 127.0.0.1 (tests, `shale up`, a reverse proxy): the per-client cap
 * then applies to all of them together, and eviction is what keeps the API reachable.
 * Stalled connections are closed by Node's headersTimeout (answered 408), idle ones by its
 * keepAliveTimeout; a closing connection reads and drops what its client still sends for
 * closeLingerMs (at most drainMaxBytes) so that its answer arrives instead of a reset.
 */
import type http from 'node:http';
import type net from 'node:net';
import { assert } from '@shale/common';
import {
  API_BODY_DRAIN_MAX_BYTES,
  API_CLOSE_LINGER_MS,
  API_CONNECTIONS_MAX,
  API_CONNECTIONS_PER_CLIENT_MAX,
} from './constants.js';

export interface ConnectionLimits {
  readonly connectionsMax: number;
  readonly connectionsPerClientMax: number;
  readonly closeLingerMs: number;
  readonly drainMaxBytes: number;
}

export const DEFAULT_CONNECTION_LIMITS: ConnectionLimits = {
  connectionsMax: API_CONNECTIONS_MAX,
  connectionsPerClientMax: API_CONNECTIONS_PER_CLIENT_MAX,
  closeLingerMs: API_CLOSE_LINGER_MS,
  drainMaxBytes: API_BODY_DRAIN_MAX_BYTES,
};

export function checkConnectionLimits(limits: ConnectionLimits): void {
  assert(
    Number.isInteger(limits.connectionsMax) && limits.connectionsMax >= 1,
    `connectionsMax ${limits.connectionsMax} must be a positive integer`,
  );
  assert(
    Number.isInteger(limits.connectionsPerClientMax) &&
      limits.connectionsPerClientMax >= 1 &&
      limits.connectionsPerClientMax <= limits.connectionsMax,
    `connectionsPerClientMax ${limits.connectionsPerClientMax} must be 1..connectionsMax (${limits.connectionsMax})`,
  );
  assert(limits.closeLingerMs > 0, 'closeLingerMs must be positive');
  assert(limits.drainMaxBytes >= 0, 'drainMaxBytes must not be negative');
}

// The defaults must leave other clients room: one address gets less than every slot.
checkConnectionLimits(DEFAULT_CONNECTION_LIMITS);
assert(
  API_CONNECTIONS_PER_CLIENT_MAX < API_CONNECTIONS_MAX,
  'one client must not be able to take every connection',
);

/** What the guard counts, for the API's metrics. */
export interface ConnectionCounters {
  evicted(reason: 'client-cap' | 'global-cap'): void;
  refused(reason: 'client-cap' | 'global-cap'): void;
}

interface Tracked {
  readonly socket: net.Socket;
  readonly client: string;
  requestsInProgress: number;
  requestsDone: number;
  closing: boolean;
  /** Order of the last change to its evictability: lower is older. */
  sequence: number;
}

/** 0 goes first; undefined: not evictable (serving a request). */
function evictionRank(t: Tracked): number | undefined {
  if (t.closing) return 0;
  if (t.requestsInProgress > 0) return undefined;
  return t.requestsDone === 0 ? 1 : 2;
}

export class ConnectionGuard {
  private readonly all = new Map<net.Socket, Tracked>();
  private readonly byClient = new Map<string, Set<Tracked>>();
  private sequence = 0;

  constructor(
    private readonly limits: ConnectionLimits = DEFAULT_CONNECTION_LIMITS,
    private readonly counters?: ConnectionCounters,
  ) {
    checkConnectionLimits(limits);
  }

  /** Connections held now (closing ones included). */
  get openCount(): number {
    return this.all.size;
  }

  /** Watches the server's connections and requests (call before it listens). */
  attach(server: http.Server): void {
    server.on('connection', (socket: net.Socket) => this.admit(socket));
    const onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
      const tracked = this.all.get(req.socket);
      if (tracked === undefined) return;
      tracked.requestsInProgress++;
      res.once('close', () => {
        tracked.requestsInProgress--;
        tracked.requestsDone++;
        tracked.sequence = ++this.sequence;
      });
    };
    server.on('request', onRequest);
    // With a 'checkContinue' listener Node emits it instead of 'request' for Expect: 100-continue.
    server.on('checkContinue', onRequest);
  }

  /**
   * Closes a connection once what was written to it has gone: a FIN after the answer, then
   * what the client still sends is read and dropped until it closes too, for at most
   * closeLingerMs and drainMaxBytes; then the connection is cut. Closing at once instead
   * would make the kernel answer the unread bytes with a reset, which can destroy the answer
   * before the client has read it. Idempotent.
   */
  closeAfterAnswer(socket: net.Socket): void {
    const tracked = this.all.get(socket);
    if (tracked !== undefined) {
      if (tracked.closing) return;
      tracked.closing = true;
      tracked.sequence = ++this.sequence;
    } else if (socket.destroyed) {
      return;
    }
    if (!socket.writableEnded) socket.end();
    let droppedBytes = 0;
    socket.on('data', (chunk: Buffer) => {
      droppedBytes += chunk.length;
      if (droppedBytes > this.limits.drainMaxBytes) socket.destroy();
    });
    socket.resume();
    const timer = setTimeout(() => socket.destroy(), this.limits.closeLingerMs);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
  }

  /**
   * Node's 'clientError' (malformed HTTP, a headers or request deadline passed): `answer`
   * (a whole raw HTTP response) is written when no request is being answered on the
   * connection, then it closes as after any closing answer. A connection whose request is
   * being answered is cut: its handler owns the answer and cannot finish it.
   */
  clientError(socket: net.Socket, answer: string): void {
    const tracked = this.all.get(socket);
    if (tracked !== undefined && tracked.requestsInProgress > 0) {
      socket.destroy();
      return;
    }
    if (tracked?.closing !== true && socket.writable && !socket.writableEnded) socket.write(answer);
    this.closeAfterAnswer(socket);
  }

  private admit(socket: net.Socket): void {
    const client = socket.remoteAddress ?? 'unknown';
    const mine = this.byClient.get(client);
    if (
      mine !== undefined &&
      mine.size >= this.limits.connectionsPerClientMax &&
      !this.evictOldest(mine, 'client-cap')
    ) {
      this.refuse(socket, 'client-cap');
      return;
    }
    if (
      this.all.size >= this.limits.connectionsMax &&
      !this.evictOldest(this.all.values(), 'global-cap')
    ) {
      this.refuse(socket, 'global-cap');
      return;
    }
    const tracked: Tracked = {
      socket,
      client,
      requestsInProgress: 0,
      requestsDone: 0,
      closing: false,
      sequence: ++this.sequence,
    };
    this.all.set(socket, tracked);
    let set = this.byClient.get(client);
    if (set === undefined) {
      set = new Set();
      this.byClient.set(client, set);
    }
    set.add(tracked);
    socket.once('close', () => this.forget(tracked));
    // Node ends an answer that closes the connection (Connection: close, a final answer to
    // Expect: 100-continue) with socket.destroySoon(): a FIN, then the socket is destroyed as
    // soon as the answer is flushed. A client still sending its body then has unread bytes
    // here, the kernel answers them with a reset, and the reset can destroy the answer before
    // the client reads it (a 413 lost). It lingers instead.
    socket.destroySoon = () => this.closeAfterAnswer(socket);
  }

  private evictOldest(candidates: Iterable<Tracked>, reason: 'client-cap' | 'global-cap'): boolean {
    let victim: Tracked | undefined;
    let victimRank = Number.POSITIVE_INFINITY;
    for (const candidate of candidates) {
      const rank = evictionRank(candidate);
      if (rank === undefined) continue;
      if (
        rank < victimRank ||
        (rank === victimRank && victim !== undefined && candidate.sequence < victim.sequence)
      ) {
        victim = candidate;
        victimRank = rank;
      }
    }
    if (victim === undefined) return false;
    // Forgotten now, not on its 'close' (which comes later): the slot is the new connection's.
    this.forget(victim);
    victim.socket.destroy();
    this.counters?.evicted(reason);
    return true;
  }

  private refuse(socket: net.Socket, reason: 'client-cap' | 'global-cap'): void {
    // Every connection is serving a request: nothing may go, the new one cannot come in.
    socket.destroy();
    this.counters?.refused(reason);
  }

  private forget(tracked: Tracked): void {
    if (this.all.get(tracked.socket) !== tracked) return;
    this.all.delete(tracked.socket);
    const set = this.byClient.get(tracked.client);
    set?.delete(tracked);
    if (set?.size === 0) this.byClient.delete(tracked.client);
  }
}
