/**
 * What an upload costs in requests, against the real server: a file that fits one part is one PutObject
 * and nothing else (continuous replication sends a segment a second, so a HEAD after each would double
 * its requests), and what put returns agrees with what the server stored.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { createS3Client, S3Store } from '../../src/replica/s3-store.js';
import { tempDir } from '../helpers/db.js';
import { createBucket, rawClient, s3Info } from '../helpers/s3.js';

describe('S3Store requests', () => {
  it('puts a small file with one PutObject, no HEAD, and returns the stored version, size and metadata', async () => {
    const { bucket } = await createBucket();
    const s3 = s3Info();
    const client = createS3Client({ endpoint: s3.endpoint, region: s3.region, forcePathStyle: true });
    const sent: string[] = [];
    client.middlewareStack.add(
      (next, context) => (args) => {
        sent.push(context.commandName ?? '?');
        return next(args);
      },
      { step: 'initialize', name: 'countCommands' },
    );
    const store = new S3Store({ bucket, client });
    const path = join(tempDir(), 'segment.bin');
    writeFileSync(path, Buffer.alloc(300_000, 7));
    const before = Date.now();
    const info = await store.put('db.sqlite3.db-sync/g/1.seg', path, { metadata: { 'chain-gen': 'g' } });
    expect(sent).toEqual(['PutObjectCommand']);

    const raw = rawClient();
    try {
      const head = await raw.send(new HeadObjectCommand({ Bucket: bucket, Key: 'db.sqlite3.db-sync/g/1.seg' }));
      expect(info).toMatchObject({ key: 'db.sqlite3.db-sync/g/1.seg', versionId: head.VersionId, sizeBytes: 300_000, isLatest: true });
      expect(info.metadata).toEqual(head.Metadata);
      expect(info.lastModified.getTime()).toBeGreaterThanOrEqual(before);
    } finally {
      raw.destroy();
      client.destroy();
    }
  });
});
