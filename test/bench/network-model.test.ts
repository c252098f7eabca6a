/**
 * The benchmark's network model (bench/lib/netmodel.ts) against the real local S3 server: it must enforce
 * what it claims — no connection faster than its cap, no task faster than the total cap, every response
 * at least the first-byte latency late — and pass bytes through unchanged.
 *
 * The bounds only go the way load cannot break: a busy machine makes transfers slower and responses
 * later, never faster, so "throughput does not exceed the cap by more than 10 %" and "the first byte
 * comes no sooner than the latency" hold on a loaded 2-core box. No lower bound on throughput is asserted.
 */
import { createHash, randomBytes } from 'node:crypto';
import { get, type IncomingMessage } from 'node:http';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BYTES_PER_MB, startNetworkProxy, type NetworkModel, type NetworkProxy } from '../../bench/lib/netmodel.js';
import { createBucket, rawClient, s3Info } from '../helpers/s3.js';

const OBJECT_BYTES = 4 * 1024 * 1024;
const TOLERANCE = 1.1;
// Caps far below what loopback carries even on a loaded machine (4-8 MB/s for one SDK transfer of 5 MiB
// at load 15, 15-20 MB/s for larger ones), so an unenforced cap fails these tests instead of passing by accident.
const model: NetworkModel = { name: 'test', connectionMBps: 3, firstByteMs: 150, totalMBps: 4.5 };

let proxy: NetworkProxy;
let bucket: string;
const body = randomBytes(OBJECT_BYTES);
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** An SDK client that talks to the server through the model (its own connections). */
function proxiedClient(): S3Client {
  const s3 = s3Info();
  return new S3Client({
    endpoint: proxy.endpoint,
    region: s3.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

/** GET the object through the proxy on a connection of its own; time to the response head and to the last byte. */
async function timedGet(client: S3Client): Promise<{ headMs: number; totalMs: number; bytes: Buffer }> {
  const started = performance.now();
  const out = await client.send(new GetObjectCommand({ Bucket: bucket, Key: 'object' }));
  const headMs = performance.now() - started;
  const bytes = Buffer.from(await out.Body!.transformToByteArray());
  return { headMs, totalMs: performance.now() - started, bytes };
}

const mbps = (bytes: number, ms: number): number => bytes / BYTES_PER_MB / (ms / 1000);

describe('bench network model against the local S3 server', () => {
  beforeAll(async () => {
    ({ bucket } = await createBucket({ versioned: false }));
    const direct = rawClient();
    try {
      await direct.send(new PutObjectCommand({ Bucket: bucket, Key: 'object', Body: body }));
      await direct.send(new PutObjectCommand({ Bucket: bucket, Key: 'small', Body: 'x' }));
    } finally {
      direct.destroy();
    }
    proxy = await startNetworkProxy(s3Info().endpoint, model);
    // Load the SDK's lazily imported code once, so the timed requests time the transfer, not the start.
    const warm = proxiedClient();
    await warm.send(new GetObjectCommand({ Bucket: bucket, Key: 'small' })).then((o) => o.Body?.transformToString());
    warm.destroy();
  });
  afterAll(async () => proxy?.close());

  it("caps one connection's download at its rate and delivers the bytes unchanged", async () => {
    const client = proxiedClient();
    try {
      const { totalMs, bytes } = await timedGet(client);
      expect(sha(bytes)).toBe(sha(body));
      expect(mbps(OBJECT_BYTES, totalMs)).toBeLessThanOrEqual(model.connectionMBps * TOLERANCE);
    } finally {
      client.destroy();
    }
  });

  it("caps one connection's upload at its rate", async () => {
    const client = proxiedClient();
    try {
      const started = performance.now();
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: 'uploaded', Body: body }));
      const ms = performance.now() - started;
      expect(mbps(OBJECT_BYTES, ms)).toBeLessThanOrEqual(model.connectionMBps * TOLERANCE);
      const { bytes } = await timedGet(client);
      expect(sha(bytes)).toBe(sha(body));
    } finally {
      client.destroy();
    }
  });

  it('caps the connections together at the task rate', async () => {
    // Two SDK clients: two connections, each allowed 3 MB/s, together 4.5 MB/s.
    const clients = [proxiedClient(), proxiedClient()];
    try {
      const started = performance.now();
      const results = await Promise.all(clients.map((c) => timedGet(c)));
      const ms = performance.now() - started;
      for (const r of results) expect(sha(r.bytes)).toBe(sha(body));
      expect(mbps(2 * OBJECT_BYTES, ms)).toBeLessThanOrEqual(model.totalMBps * TOLERANCE);
    } finally {
      for (const c of clients) c.destroy();
    }
  });

  it('adds at least the first-byte latency to every request', async () => {
    // A plain HTTP GET of a missing bucket: an S3 error answer, no signature needed, nearly no body.
    for (let i = 0; i < 3; i += 1) {
      const started = performance.now();
      const res = await new Promise<IncomingMessage>((resolve, reject) =>
        get(`${proxy.endpoint}/no-such-bucket-${i}/k`, resolve).on('error', reject),
      );
      const headMs = performance.now() - started;
      res.resume();
      expect(res.statusCode).toBeGreaterThanOrEqual(400);
      expect(headMs).toBeGreaterThanOrEqual(model.firstByteMs);
    }
    const client = proxiedClient();
    try {
      const { headMs } = await timedGet(client);
      expect(headMs).toBeGreaterThanOrEqual(model.firstByteMs);
    } finally {
      client.destroy();
    }
  });
});
