/**
 * A counting HTTP proxy in front of the S3 server: forwards every request unchanged (headers included,
 * so SigV4 signatures stay valid) to the target and counts it by S3 operation, classified from the
 * method, the path and the query string. One listener per tool under test, so counts never mix.
 */
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** The S3 operations the benchmark can tell apart, and their billing class on AWS S3. */
export const OPERATIONS = {
  PutObject: 'PUT',
  UploadPart: 'PUT',
  CopyObject: 'PUT',
  CreateMultipartUpload: 'PUT',
  CompleteMultipartUpload: 'PUT',
  ListObjects: 'LIST',
  ListObjectVersions: 'LIST',
  ListMultipartUploads: 'LIST',
  ListBuckets: 'LIST',
  GetObject: 'GET',
  HeadObject: 'HEAD',
  HeadBucket: 'HEAD',
  DeleteObject: 'DELETE',
  DeleteObjects: 'DELETE',
  AbortMultipartUpload: 'DELETE',
  Other: 'OTHER',
} as const;

export type Operation = keyof typeof OPERATIONS;
export type RequestClass = (typeof OPERATIONS)[Operation];

/** Classify a path-style S3 request (`/bucket` or `/bucket/key`). */
export function classify(method: string, url: string, headers: IncomingMessage['headers']): Operation {
  const u = new URL(url, 'http://proxy');
  const q = u.searchParams;
  const segments = u.pathname.split('/').filter(Boolean);
  const hasKey = segments.length >= 2;
  switch (method) {
    case 'HEAD':
      return hasKey ? 'HeadObject' : 'HeadBucket';
    case 'GET':
      if (segments.length === 0) return 'ListBuckets';
      if (!hasKey) return q.has('versions') ? 'ListObjectVersions' : q.has('uploads') ? 'ListMultipartUploads' : 'ListObjects';
      return q.has('uploadId') ? 'Other' : 'GetObject';
    case 'PUT':
      if (!hasKey) return 'Other';
      if (q.has('partNumber')) return 'UploadPart';
      return headers['x-amz-copy-source'] ? 'CopyObject' : 'PutObject';
    case 'POST':
      if (q.has('uploads')) return 'CreateMultipartUpload';
      if (q.has('uploadId')) return 'CompleteMultipartUpload';
      if (q.has('delete')) return 'DeleteObjects';
      return 'Other';
    case 'DELETE':
      return q.has('uploadId') ? 'AbortMultipartUpload' : 'DeleteObject';
    default:
      return 'Other';
  }
}

export interface CountedRequest {
  readonly at: number;
  readonly op: Operation;
  readonly status: number;
  /** The key names a db-sync change object (`KEY.db-sync/<gen>/…`): a segment, not a base of `KEY`. */
  readonly segment: boolean;
}

/** db-sync's change objects live under `KEY.db-sync/` (docs/continuous-replication.md, "S3 layout"). */
function isSegmentPath(url: string): boolean {
  return new URL(url, 'http://proxy').pathname.includes('.db-sync/');
}

export interface CountingProxy {
  readonly endpoint: string;
  readonly requests: CountedRequest[];
  /** Counts by operation of the requests made at or after `since` (epoch ms) and before `until`. */
  counts(since?: number, until?: number): Partial<Record<Operation, number>>;
  /** Of those, the requests whose key is a db-sync segment, by operation. */
  segmentCounts(since?: number, until?: number): Partial<Record<Operation, number>>;
  close(): Promise<void>;
}

export async function startProxy(target: string): Promise<CountingProxy> {
  const t = new URL(target);
  const requests: CountedRequest[] = [];
  const server: Server = createServer((req, res) => {
    const op = classify(req.method ?? 'GET', req.url ?? '/', req.headers);
    const segment = isSegmentPath(req.url ?? '/');
    const upstream = request({ host: t.hostname, port: t.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
      requests.push({ at: Date.now(), op, status: up.statusCode ?? 0, segment });
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    upstream.on('error', (error) => {
      requests.push({ at: Date.now(), op, status: 502, segment });
      if (!res.headersSent) res.writeHead(502);
      res.end(String(error));
    });
    req.pipe(upstream);
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const count = (since: number, until: number, keep: (r: CountedRequest) => boolean): Partial<Record<Operation, number>> => {
    const out: Partial<Record<Operation, number>> = {};
    for (const r of requests) if (r.at >= since && r.at < until && keep(r)) out[r.op] = (out[r.op] ?? 0) + 1;
    return out;
  };
  return {
    endpoint: `http://127.0.0.1:${port}`,
    requests,
    counts: (since = 0, until = Number.POSITIVE_INFINITY) => count(since, until, () => true),
    segmentCounts: (since = 0, until = Number.POSITIVE_INFINITY) => count(since, until, (r) => r.segment),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Sum counts by billing class. */
export function byClass(counts: Partial<Record<Operation, number>>): Record<RequestClass, number> {
  const out: Record<RequestClass, number> = { PUT: 0, LIST: 0, GET: 0, HEAD: 0, DELETE: 0, OTHER: 0 };
  for (const [op, n] of Object.entries(counts)) out[OPERATIONS[op as Operation]] += n ?? 0;
  return out;
}
