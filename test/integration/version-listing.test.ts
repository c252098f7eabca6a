/**
 * Version listings on a bucket with thousands of versions, against the real local S3 server: the lease
 * in a versioned bucket gains a version every few seconds (`KEY.lease` sorts after `KEY`), and `backups`
 * reads a checksum per version. Listing must return exactly the key's versions and stop paging once past
 * the key; `db-sync backups` must list every version with its checksum. (Its speed is in bench/, not here.)
 */
import { createHash } from 'node:crypto';
import { ListObjectVersionsCommand } from '@aws-sdk/client-s3';
import { describe, expect, it } from 'vitest';
import { S3Store } from '../../src/replica/s3-store.js';
import { startCli } from '../helpers/cli.js';
import { awsCli, createBucket, putVersions, rawClient, s3Env, s3Info } from '../helpers/s3.js';

const KEY = 'db.sqlite3';
const KEY_VERSIONS = 1_100;
const LEASE_VERSIONS = 900;
const sha = (i: number): string => createHash('sha256').update(`version ${i}`).digest('hex');

/** Every page of ListObjectVersions under the prefix KEY, as the server cuts them. */
async function allPages(bucket: string): Promise<Array<{ truncated: boolean; nextKeyMarker: string | undefined }>> {
  const client = rawClient();
  const pages: Array<{ truncated: boolean; nextKeyMarker: string | undefined }> = [];
  let keyMarker: string | undefined;
  let versionIdMarker: string | undefined;
  try {
    do {
      const page = await client.send(
        new ListObjectVersionsCommand({ Bucket: bucket, Prefix: KEY, KeyMarker: keyMarker, VersionIdMarker: versionIdMarker }),
      );
      pages.push({ truncated: page.IsTruncated === true, nextKeyMarker: page.NextKeyMarker });
      keyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
      versionIdMarker = page.IsTruncated ? page.NextVersionIdMarker : undefined;
    } while (keyMarker);
  } finally {
    client.destroy();
  }
  return pages;
}

describe('listing versions among thousands of lease versions', () => {
  it('returns exactly the key’s versions, newest first, without paging through the lease’s; backups shows each with its checksum', async () => {
    const { bucket } = await createBucket();
    const ids = await putVersions(bucket, KEY, KEY_VERSIONS, { metadata: (i) => ({ sha256: sha(i) }) });
    await putVersions(bucket, `${KEY}.lease`, LEASE_VERSIONS);
    // Other siblings on either side of the lease in key order.
    await putVersions(bucket, `${KEY}.backup.20261123_103729`, 2);
    await putVersions(bucket, `${KEY}.conflict.20261124_000000`, 1);
    expect(ids).toHaveLength(KEY_VERSIONS);

    // A real client, counting the ListObjectVersions requests it sends.
    const client = rawClient();
    let listRequests = 0;
    client.middlewareStack.add(
      (next, context) => async (args) => {
        if (context.commandName === 'ListObjectVersionsCommand') listRequests += 1;
        return next(args);
      },
      { step: 'initialize', name: 'countListVersions' },
    );
    const s3 = s3Info();
    const store = new S3Store({ bucket, endpoint: s3.endpoint, region: s3.region, forcePathStyle: true, client });
    try {
      const versions = await store.listVersions(KEY);
      expect(versions.map((v) => v.versionId).sort()).toEqual([...ids].sort());
      expect(versions.every((v) => v.key === KEY)).toBe(true);
      expect(versions.filter((v) => v.isLatest)).toHaveLength(1);
      for (let i = 1; i < versions.length; i += 1) {
        expect(versions[i - 1]!.lastModified.getTime()).toBeGreaterThanOrEqual(versions[i]!.lastModified.getTime());
      }
      // The server decides the page sizes (RGW returns uneven pages); page through everything with the raw
      // client to learn where the key's versions end and how many pages the whole prefix takes.
      const pages = await allPages(bucket);
      const keyPages = pages.findIndex((p) => !(p.truncated && p.nextKeyMarker === KEY)) + 1;
      expect(keyPages).toBeLessThan(pages.length);
      expect(listRequests).toBe(keyPages);
    } finally {
      store.close();
    }

    // The AWS CLI agrees on the count, independently of db-sync.
    const listed = JSON.parse(
      await awsCli(bucket, [
        's3api',
        'list-object-versions',
        '--bucket',
        bucket,
        '--prefix',
        KEY,
        '--query',
        `Versions[?Key=='${KEY}'].VersionId`,
      ]),
    ) as string[];
    expect(listed).toHaveLength(KEY_VERSIONS);

    // A reader that is slow to drain the pipe (as `| jq` on a busy machine): the ~240 KB answer must
    // arrive whole; db-sync used to exit while it was still queued and cut it short.
    const slow = startCli(['backups', '--json'], { ...s3Env(bucket), LOG_LEVEL: 'warn' });
    slow.child.stdout?.pause();
    await new Promise((r) => setTimeout(r, 3_000));
    slow.child.stdout?.resume();
    const r = { code: await slow.exited, stdout: slow.stdout() };
    expect(r.code).toBe(0);
    expect(r.stdout.length).toBeGreaterThan(200_000);
    const entries = JSON.parse(r.stdout) as Array<{ kind: string; versionId?: string; key: string; sha256?: string }>;
    const versionEntries = entries.filter((e) => e.kind === 'version');
    expect(versionEntries).toHaveLength(KEY_VERSIONS);
    expect(entries.filter((e) => e.kind === 'backup').map((e) => e.key)).toEqual([`${KEY}.backup.20261123_103729`]);
    // Each version's checksum is its own metadata's (read by HEAD, in parallel), not a neighbour's.
    const expected = new Set(Array.from({ length: KEY_VERSIONS }, (_, i) => sha(i)));
    expect(new Set(versionEntries.map((e) => e.sha256))).toEqual(expected);
  }, 300_000);
});
