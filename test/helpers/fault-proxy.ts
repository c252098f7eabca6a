/**
 * A fault-injecting HTTP proxy on 127.0.0.1 in front of the real S3 server, for tests that need S3 to
 * fail on demand: 503 SlowDown and 500 InternalError with S3's XML error body, any other S3 error
 * (403 AccessDenied…), connection resets, requests held forever (blackhole), delays, slow uploads, and
 * answers lost after the server applied the request (drop-response).
 *
 * Point db-sync at {@link FaultProxy.url} (DB_S3_ENDPOINT, path style). Requests pass through untouched
 * (SigV4 signs the Host header, so it is forwarded as the client sent it) until {@link FaultProxy.set}
 * switches a fault on, for every request or only those a `match` picks (e.g. `op === 'UploadPart'`).
 * Every request is recorded with its S3 operation and what the proxy did with it, so a test can check
 * that a failing S3 sees backoff, not a retry storm.
 */
import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { Transform, type TransformCallback } from 'node:stream';

/** The S3 operation a request is, guessed from method, path and query (path-style URLs). */
export type S3Op =
  | 'ListBuckets'
  | 'HeadBucket'
  | 'ListObjectsV2'
  | 'ListObjectVersions'
  | 'ListMultipartUploads'
  | 'HeadObject'
  | 'GetObject'
  | 'PutObject'
  | 'CopyObject'
  | 'DeleteObject'
  | 'CreateMultipartUpload'
  | 'UploadPart'
  | 'ListParts'
  | 'CompleteMultipartUpload'
  | 'AbortMultipartUpload'
  | 'Other';

export interface RequestInfo {
  readonly method: string;
  /** Path without the query, e.g. `/bucket/db.sqlite3`. */
  readonly path: string;
  readonly query: URLSearchParams;
  readonly op: S3Op;
  /** Object key (path after the bucket), empty for bucket-level calls. */
  readonly key: string;
}

export type Fault =
  | { readonly kind: 'pass' }
  /** 503 with `<Code>SlowDown</Code>`, what S3 answers when throttling. */
  | { readonly kind: 'slowdown' }
  /** 500 with `<Code>InternalError</Code>`. */
  | { readonly kind: 'internal-error' }
  /** Any S3 error answer, e.g. 403 AccessDenied. */
  | { readonly kind: 'error'; readonly status: number; readonly code: string; readonly message?: string }
  /** Close the connection without an answer (ECONNRESET / socket hang up on the client). */
  | { readonly kind: 'reset' }
  /** Read the request and never answer, until {@link FaultProxy.release} or {@link FaultProxy.close}. */
  | { readonly kind: 'blackhole' }
  /** Forward the request, let the server apply it, then close the connection instead of answering. */
  | { readonly kind: 'drop-response' }
  /** Forward after a pause. */
  | { readonly kind: 'delay'; readonly ms: number }
  /** Forward request and response bodies at this rate each (a slow link: uploads and downloads stay in flight). */
  | { readonly kind: 'throttle'; readonly bytesPerSecond: number }
  /** Forward, then reset the connection after this many bytes of the response body (a reset mid-download). */
  | { readonly kind: 'reset-mid-body'; readonly afterBytes: number };

export interface RequestRecord extends RequestInfo {
  readonly at: number;
  /** The fault applied (`pass` when forwarded as is). */
  readonly fault: Fault['kind'];
  /** Status sent back, once known (0: none, e.g. reset or held). */
  status: number;
}

export interface FaultProxy {
  /** `http://127.0.0.1:PORT`, for DB_S3_ENDPOINT. */
  readonly url: string;
  readonly port: number;
  /** Apply `fault` to the requests `match` picks (default: all), at most `times` of them (default: no limit). */
  set(fault: Fault, options?: { match?: (req: RequestInfo) => boolean; times?: number }): void;
  /** Forward everything again (held requests stay held; see {@link release}). */
  pass(): void;
  /** Every request seen so far, oldest first. */
  readonly requests: readonly RequestRecord[];
  /** How many requests were seen (since `since`, an index from {@link mark}), optionally only those `filter` keeps. */
  count(filter?: (r: RequestRecord) => boolean, since?: number): number;
  /** Requests per method (since `since`). */
  countByMethod(since?: number): Record<string, number>;
  /** The current request count, to count from later. */
  mark(): number;
  /** Requests held by a blackhole right now. */
  held(): number;
  /** Drop every held request (its client sees the connection close). */
  release(): void;
  close(): Promise<void>;
}

/** Classify a path-style S3 request. */
export function s3Op(method: string, path: string, query: URLSearchParams, headers: IncomingMessage['headers']): S3Op {
  const parts = path.split('/').filter((p) => p !== '');
  if (parts.length === 0) return method === 'GET' ? 'ListBuckets' : 'Other';
  const onObject = parts.length > 1;
  if (!onObject) {
    if (method === 'HEAD') return 'HeadBucket';
    if (method === 'GET' && query.has('versions')) return 'ListObjectVersions';
    if (method === 'GET' && query.has('uploads')) return 'ListMultipartUploads';
    if (method === 'GET') return 'ListObjectsV2';
    return 'Other';
  }
  const uploadId = query.has('uploadId');
  switch (method) {
    case 'HEAD':
      return 'HeadObject';
    case 'GET':
      return uploadId ? 'ListParts' : 'GetObject';
    case 'PUT':
      if (uploadId && query.has('partNumber')) return 'UploadPart';
      return headers['x-amz-copy-source'] ? 'CopyObject' : 'PutObject';
    case 'POST':
      if (query.has('uploads')) return 'CreateMultipartUpload';
      return uploadId ? 'CompleteMultipartUpload' : 'Other';
    case 'DELETE':
      return uploadId ? 'AbortMultipartUpload' : 'DeleteObject';
    default:
      return 'Other';
  }
}

const ERROR_TEXT: Record<string, string> = {
  SlowDown: 'Please reduce your request rate.',
  InternalError: 'We encountered an internal error. Please try again.',
};

function s3ErrorBody(code: string, message: string | undefined): string {
  const text = message ?? ERROR_TEXT[code] ?? code;
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${text}</Message><RequestId>fault-proxy</RequestId></Error>`;
}

/** Passes bytes through at no more than `bytesPerSecond`, in small slices. */
class Throttle extends Transform {
  private readonly sliceBytes: number;
  constructor(private readonly bytesPerSecond: number) {
    super();
    this.sliceBytes = Math.max(1024, Math.floor(bytesPerSecond / 20));
  }
  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    let offset = 0;
    const next = (): void => {
      if (this.destroyed) return;
      if (offset >= chunk.length) {
        done();
        return;
      }
      const slice = chunk.subarray(offset, offset + this.sliceBytes);
      offset += slice.length;
      this.push(slice);
      setTimeout(next, (slice.length / this.bytesPerSecond) * 1000);
    };
    next();
  }
}

/** Start a proxy in front of `target` (e.g. the local RGW endpoint), passing everything through. */
export async function startFaultProxy(target: string): Promise<FaultProxy> {
  const upstream = new URL(target);
  const records: RequestRecord[] = [];
  const heldResponses = new Set<ServerResponse>();
  const sockets = new Set<Socket>();
  let rule: { fault: Fault; match: ((req: RequestInfo) => boolean) | undefined; left: number } = {
    fault: { kind: 'pass' },
    match: undefined,
    left: Infinity,
  };

  const pickFault = (info: RequestInfo): Fault => {
    if (rule.fault.kind === 'pass' || rule.left <= 0) return { kind: 'pass' };
    if (rule.match && !rule.match(info)) return { kind: 'pass' };
    rule.left -= 1;
    return rule.fault;
  };

  const forward = (
    req: IncomingMessage,
    res: ServerResponse,
    record: RequestRecord,
    options: { bytesPerSecond?: number; dropResponse?: boolean; resetAfterBytes?: number } = {},
  ): void => {
    const { bytesPerSecond, resetAfterBytes } = options;
    // `expect: 100-continue` is never signed (SigV4 leaves it out); dropping it keeps the relay simple.
    const { expect: _expect, ...headers } = req.headers;
    const out = request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers }, (upstreamRes) => {
      record.status = upstreamRes.statusCode ?? 0;
      if (options.dropResponse) {
        // The server has answered, so it applied (or refused) the request; the client never learns which.
        upstreamRes.resume();
        req.socket.destroy();
        return;
      }
      res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.headers);
      if (bytesPerSecond !== undefined) upstreamRes.pipe(new Throttle(bytesPerSecond)).pipe(res);
      else if (resetAfterBytes !== undefined) {
        let sent = 0;
        upstreamRes.on('data', (chunk: Buffer) => {
          if (sent >= resetAfterBytes) return;
          const part = chunk.subarray(0, resetAfterBytes - sent);
          sent += part.length;
          res.write(part);
          // The headers promised the whole body: cutting the socket now is what a reset mid-download looks like.
          if (sent >= resetAfterBytes) res.socket?.destroy();
        });
      } else upstreamRes.pipe(res);
    });
    out.on('error', () => res.destroy());
    res.on('close', () => out.destroy());
    if (bytesPerSecond !== undefined) req.pipe(new Throttle(bytesPerSecond)).pipe(out);
    else req.pipe(out);
  };

  const answer = (req: IncomingMessage, res: ServerResponse, record: RequestRecord, status: number, code: string, message?: string) => {
    // S3 reads (or discards) the body before answering an error; so does this proxy, so the client sees
    // the answer rather than a broken pipe.
    req.resume();
    req.on('end', () => {
      const body = req.method === 'HEAD' ? '' : s3ErrorBody(code, message);
      record.status = status;
      res.writeHead(status, {
        'content-type': 'application/xml',
        'content-length': Buffer.byteLength(body),
        'x-amz-request-id': 'fault-proxy',
      });
      res.end(body);
    });
  };

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://proxy');
    const path = decodeURIComponent(url.pathname);
    const method = req.method ?? 'GET';
    const op = s3Op(method, path, url.searchParams, req.headers);
    const info: RequestInfo = { method, path, query: url.searchParams, op, key: path.split('/').slice(2).join('/') };
    const fault = pickFault(info);
    const record: RequestRecord = { ...info, at: Date.now(), fault: fault.kind, status: 0 };
    records.push(record);
    switch (fault.kind) {
      case 'pass':
        forward(req, res, record);
        return;
      case 'slowdown':
        answer(req, res, record, 503, 'SlowDown');
        return;
      case 'internal-error':
        answer(req, res, record, 500, 'InternalError');
        return;
      case 'error':
        answer(req, res, record, fault.status, fault.code, fault.message);
        return;
      case 'reset':
        req.socket.destroy();
        return;
      case 'blackhole':
        req.resume();
        heldResponses.add(res);
        res.on('close', () => heldResponses.delete(res));
        return;
      case 'delay': {
        req.pause();
        const timer = setTimeout(() => forward(req, res, record), fault.ms);
        res.on('close', () => clearTimeout(timer));
        return;
      }
      case 'drop-response':
        forward(req, res, record, { dropResponse: true });
        return;
      case 'throttle':
        forward(req, res, record, { bytesPerSecond: fault.bytesPerSecond });
        return;
      case 'reset-mid-body':
        forward(req, res, record, { resetAfterBytes: fault.afterBytes });
        return;
    }
  });
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const since = (index: number | undefined): RequestRecord[] => records.slice(index ?? 0);

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    set(fault, options = {}) {
      rule = { fault, match: options.match, left: options.times ?? Infinity };
    },
    pass() {
      rule = { fault: { kind: 'pass' }, match: undefined, left: Infinity };
    },
    requests: records,
    count(filter, sinceIndex) {
      return since(sinceIndex).filter((r) => filter?.(r) ?? true).length;
    },
    countByMethod(sinceIndex) {
      const counts: Record<string, number> = {};
      for (const r of since(sinceIndex)) counts[r.method] = (counts[r.method] ?? 0) + 1;
      return counts;
    },
    mark: () => records.length,
    held: () => heldResponses.size,
    release() {
      for (const res of heldResponses) res.destroy();
      heldResponses.clear();
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const res of heldResponses) res.destroy();
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
