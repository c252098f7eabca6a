/**
 * A network model between the tools and the local S3 server: an HTTP proxy on 127.0.0.1 that adds what
 * real S3 has and loopback does not — a bandwidth cap per connection, a first-byte latency per request
 * and a bandwidth cap for the whole task. Every tool (db-sync, the AWS CLI, Litestream, the SDK-level
 * sections) talks to the server through it when `npm run bench -- --network aws` is given.
 *
 * Userspace on purpose: tc/netem on `lo` would slow every process on the machine, other engineers' test
 * suites included. Requests and responses are forwarded unchanged (headers included, so SigV4 signatures
 * stay valid).
 *
 * The model, per request: the request body is paced by the client connection's upload bucket (and the
 * task's); when the server's response head arrives, the proxy holds it for `firstByteMs` (S3's time to
 * first byte, which on AWS comes after the request body for a PUT too), then paces the response body by
 * the connection's download bucket (and the task's). Connection set-up (TCP + TLS: about one to three
 * in-region round trips of ~1 ms) is not modelled.
 */
import { Agent, createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';

/** Bytes per MB in every figure of the model and its options (10^6, as the benchmark's tables use). */
export const BYTES_PER_MB = 1e6;

export interface NetworkModel {
  /** Preset name, or "custom". */
  readonly name: string;
  /** Cap of one TCP connection, each direction, MB/s. */
  readonly connectionMBps: number;
  /** Added before the first byte of every response, ms. */
  readonly firstByteMs: number;
  /** Cap of all connections together (the task's network), each direction, MB/s. */
  readonly totalMBps: number;
}

/**
 * `aws`: S3 from a small Fargate task in the same region. Sources and reasoning in bench/README.md
 * ("Network model"): AWS's S3 performance guidance (one request per 85–90 MB/s; median latency of small
 * requests "in the tens of milliseconds", 100–200 ms first-byte-out quoted for small objects), and a task
 * limit that AWS does not publish for Fargate (an assumption, stated as such).
 */
export const NETWORK_PRESETS: Readonly<Record<string, NetworkModel>> = {
  aws: { name: 'aws', connectionMBps: 85, firstByteMs: 50, totalMBps: 300 },
};

/** The model for `--network NAME` with the optional overrides. */
export function networkModel(
  name: string,
  overrides: { connectionMBps?: number | undefined; firstByteMs?: number | undefined; totalMBps?: number | undefined } = {},
): NetworkModel {
  const preset = NETWORK_PRESETS[name];
  if (!preset) throw new Error(`--network ${name}: unknown preset (known: ${Object.keys(NETWORK_PRESETS).join(', ')})`);
  const model = {
    name: preset.name,
    connectionMBps: overrides.connectionMBps ?? preset.connectionMBps,
    firstByteMs: overrides.firstByteMs ?? preset.firstByteMs,
    totalMBps: overrides.totalMBps ?? preset.totalMBps,
  };
  const changed =
    model.connectionMBps !== preset.connectionMBps || model.firstByteMs !== preset.firstByteMs || model.totalMBps !== preset.totalMBps;
  return changed ? { ...model, name: `${preset.name}-custom` } : model;
}

/** One line for logs and reports. */
export function describeModel(m: NetworkModel): string {
  return `${m.name}: ${m.connectionMBps} MB/s per connection, ${m.firstByteMs} ms first-byte latency per request, ${m.totalMBps} MB/s for the task (each direction)`;
}

/** Largest slice the proxy forwards at once: sockets hand over at most 64 KiB, larger chunks are cut. */
const SLICE_BYTES = 64 * 1024;
/**
 * What a bucket may save up: 100 ms of its rate (at least one slice). Timers on a loaded machine fire
 * late; the bytes a late timer could have sent are caught up from this, so a stream's long-run rate stays
 * at the cap instead of sagging under it. It cannot lift a stream above the cap: a body's bucket starts
 * empty (see {@link paced}), so by any moment it has sent at most rate × elapsed (+ one slice).
 */
const BURST_MS = 100;

/**
 * A token bucket in bytes. {@link take} always grants and returns how long to wait before sending (the
 * tokens may go negative: a debt the next refill pays), so several streams sharing the task's bucket are
 * served in the order they asked.
 */
export class TokenBucket {
  private tokens = 0;
  private last = performance.now();
  private readonly burst: number;

  constructor(private readonly bytesPerS: number) {
    this.burst = Math.max(SLICE_BYTES, (bytesPerS * BURST_MS) / 1000);
  }

  /** Take `bytes`; returns the ms to wait until they are paid for (0 when the bucket held them). */
  take(bytes: number): number {
    const now = performance.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.bytesPerS) / 1000);
    this.last = now;
    this.tokens -= bytes;
    return this.tokens >= 0 ? 0 : (-this.tokens / this.bytesPerS) * 1000;
  }
}

/**
 * Pace one body (a request's or a response's) at `connectionBytesPerS` and through the task's `shared`
 * bucket. The body's own bucket is new and empty: HTTP/1.1 carries one body at a time per connection and
 * direction, so this is the connection's cap, and a connection that was idle (or waited out the first-byte
 * latency) gets no saved-up burst — TCP would not send faster after a pause either.
 */
function paced(connectionBytesPerS: number, shared: TokenBucket): Transform {
  const own = new TokenBucket(connectionBytesPerS);
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      const slices: Buffer[] = [];
      for (let at = 0; at < chunk.length; at += SLICE_BYTES) slices.push(chunk.subarray(at, at + SLICE_BYTES));
      const next = (): void => {
        const slice = slices.shift();
        if (!slice) return done();
        const waitMs = Math.max(own.take(slice.length), shared.take(slice.length));
        this.push(slice);
        // The slice is pushed now and the next one waits for its debt to be paid: the same average
        // rate as waiting first, with one timer per slice instead of a promise chain.
        if (waitMs > 0) setTimeout(next, waitMs);
        else next();
      };
      next();
    },
  });
}

export interface NetworkProxy {
  readonly endpoint: string;
  readonly model: NetworkModel;
  /** Requests forwarded so far. */
  readonly requests: () => number;
  close(): Promise<void>;
}

/** Start the model in front of `target` (e.g. `http://127.0.0.1:7490`). */
export async function startNetworkProxy(target: string, model: NetworkModel): Promise<NetworkProxy> {
  const t = new URL(target);
  const upstreamAgent = new Agent({ keepAlive: true });
  const taskUp = new TokenBucket(model.totalMBps * BYTES_PER_MB);
  const taskDown = new TokenBucket(model.totalMBps * BYTES_PER_MB);
  const connectionBytesPerS = model.connectionMBps * BYTES_PER_MB;
  let forwarded = 0;

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    forwarded += 1;
    const fail = (error: unknown): void => {
      if (!res.headersSent) res.writeHead(502);
      res.end(String(error));
    };
    const upstream = request(
      { host: t.hostname, port: t.port, method: req.method, path: req.url, headers: req.headers, agent: upstreamAgent },
      (up) => {
        void (async () => {
          await sleep(model.firstByteMs);
          res.writeHead(up.statusCode ?? 502, up.headers);
          await pipeline(up, paced(connectionBytesPerS, taskDown), res);
        })().catch((error: unknown) => {
          up.destroy();
          if (!res.writableEnded) fail(error);
        });
      },
    );
    upstream.on('error', fail);
    pipeline(req, paced(connectionBytesPerS, taskUp), upstream).catch((error: unknown) => {
      upstream.destroy();
      fail(error);
    });
  };

  const server: Server = createServer(handle);
  server.keepAliveTimeout = 60_000;
  // A 1 GB upload at a low cap takes minutes; Node's default request timeout (300 s) would cut it.
  server.requestTimeout = 0;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    model,
    requests: () => forwarded,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
        upstreamAgent.destroy();
      }),
  };
}
