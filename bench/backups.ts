/**
 * `db-sync backups` on a bucket with thousands of versions: how long listing every version of KEY and
 * reading each one's sha256 takes, with the lease's versions beside them in the same versioned bucket.
 *
 *   flock /tmp/bench.lock npx tsx bench/backups.ts [--versions 5000] [--lease-versions 2000] [--runs 3]
 *
 * Starts its own S3 server (as bench/run.ts does: port 7490, never the test suite's), writes the versions
 * with small bodies and sha256 metadata straight through the SDK, then runs the built CLI (`dist/`) as a
 * subprocess and prints the wall times. Expects `npm run build` first.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promisify } from 'node:util';
import { parseArgs } from 'node:util';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { CLI } from './lib/dbsync.js';
import { client, createBucket, s3Env, serverRunning, serverSettings, startServer, stopServer } from './lib/s3.js';
import { median, round } from './lib/stats.js';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const execFileAsync = promisify(execFile);

const { values } = parseArgs({
  options: {
    versions: { type: 'string', default: '5000' },
    'lease-versions': { type: 'string', default: '2000' },
    runs: { type: 'string', default: '3' },
    'keep-server': { type: 'boolean', default: false },
  },
});
const versions = Number(values.versions);
const leaseVersions = Number(values['lease-versions']);
const runs = Number(values.runs);
const KEY = 'db.sqlite3';

const settings = { ...serverSettings(), memBytes: 1024 ** 3 };
const wasRunning = await serverRunning(settings);
const info = await startServer(settings);
const s3 = client(info);
try {
  const bucket = `bench-backups-${Date.now()}`;
  await createBucket(s3, bucket);
  const put = async (key: string, count: number): Promise<number> => {
    const started = performance.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        while (next < count) {
          const i = next++;
          const body = `${key} version ${i}`;
          const sha256 = createHash('sha256').update(body).digest('hex');
          await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, Metadata: { sha256 } }));
        }
      }),
    );
    return (performance.now() - started) / 1000;
  };
  const putS = await put(KEY, versions);
  const leaseS = await put(`${KEY}.lease`, leaseVersions);
  process.stdout.write(
    `wrote ${versions} versions of ${KEY} in ${round(putS, 1)} s, ${leaseVersions} of ${KEY}.lease in ${round(leaseS, 1)} s\n`,
  );

  const env = { ...s3Env(info), DB_S3_BUCKET: bucket, LOG_LEVEL: 'warn' };
  const walls: number[] = [];
  for (let run = 1; run <= runs; run += 1) {
    const started = performance.now();
    const { stdout } = await execFileAsync(process.execPath, [CLI, 'backups', '--json'], { env, maxBuffer: 64 * 1024 ** 2 });
    const wallS = (performance.now() - started) / 1000;
    const entries = JSON.parse(stdout) as Array<{ kind: string; sha256?: string }>;
    const listed = entries.filter((e) => e.kind === 'version');
    if (listed.length !== versions || listed.some((e) => !e.sha256)) {
      throw new Error(`run ${run}: listed ${listed.length} versions (expected ${versions}), some without a sha256`);
    }
    walls.push(wallS);
    process.stdout.write(`run ${run}: db-sync backups --json listed ${listed.length} versions with sha256 in ${round(wallS, 2)} s\n`);
  }
  process.stdout.write(`median: ${round(median(walls), 2)} s for ${versions} versions (+ ${leaseVersions} lease versions in the bucket)\n`);
} finally {
  s3.destroy();
  if (!wasRunning && !values['keep-server']) await stopServer(settings);
}
