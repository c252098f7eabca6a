/**
 * The benchmark's request accounting (bench/lib/proxy.ts, bench/lib/s3-pricing.ts): the counting proxy,
 * in front of the real local S3 server, tells db-sync's change objects (`KEY.db-sync/…`) from bases of
 * `KEY` and classifies the multipart calls of a base; the monthly cost is AWS's list prices × 730 h.
 */
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { byClass, startProxy, type CountingProxy } from '../../bench/lib/proxy.js';
import { monthlyRequestCost } from '../../bench/lib/s3-pricing.js';
import { createBucket, s3Info } from '../helpers/s3.js';

let proxy: CountingProxy;
let client: S3Client;
let bucket: string;

describe('bench request accounting', () => {
  beforeAll(async () => {
    ({ bucket } = await createBucket({ versioned: true }));
    const s3 = s3Info();
    proxy = await startProxy(s3.endpoint);
    client = new S3Client({
      endpoint: proxy.endpoint,
      region: s3.region,
      forcePathStyle: true,
      credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
  });
  afterAll(async () => {
    client?.destroy();
    await proxy?.close();
  });

  it('counts segment PUTs apart from a base uploaded in parts', async () => {
    const since = Date.now();
    const key = 'app/db.sqlite3';
    for (const seq of [1, 2, 3]) {
      const name = `${key}.db-sync/20261203T000000Z-0123abcd/${seq.toString(16).padStart(16, '0')}-1764720000000.seg`;
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: name, Body: 'segment' }));
    }
    const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
    const part = await client.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId, PartNumber: 1, Body: 'base' }));
    await client.send(
      new CompleteMultipartUploadCommand({
        Bucket: bucket,
        Key: key,
        UploadId,
        MultipartUpload: { Parts: [{ PartNumber: 1, ETag: part.ETag }] },
      }),
    );
    expect(proxy.counts(since)).toEqual({ PutObject: 3, CreateMultipartUpload: 1, UploadPart: 1, CompleteMultipartUpload: 1 });
    expect(proxy.segmentCounts(since)).toEqual({ PutObject: 3 });
    expect(byClass(proxy.counts(since)).PUT).toBe(6);
  });

  it("prices requests at AWS S3 Standard's list prices over a 730-hour month", () => {
    // One PUT a second: 3,600 × 730 × $0.005/1,000 = $13.14; GETs and HEADs at $0.0004/1,000; DELETE free.
    expect(monthlyRequestCost({ PUT: 3600, LIST: 0, GET: 0, HEAD: 0, DELETE: 0, OTHER: 0 })).toBeCloseTo(13.14, 6);
    expect(monthlyRequestCost({ PUT: 0, LIST: 100, GET: 1000, HEAD: 1000, DELETE: 5000, OTHER: 0 })).toBeCloseTo(0.365 + 0.584, 6);
    expect(monthlyRequestCost({ PUT: 0, LIST: 0, GET: 0, HEAD: 0, DELETE: 0, OTHER: 10 })).toBeCloseTo(0.0365, 6);
  });
});
