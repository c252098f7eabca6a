#!/usr/bin/env node
// The demo: db-sync's whole job on this machine, with no cloud account.
//
//   npm run demo              against the project's local S3 server (Ceph RGW on 127.0.0.1, started here)
//   npm run demo -- --dir     against a local directory instead (no S3 server needed)
//
// It seeds a versioned bucket with a sample WAL database, then runs `db-sync run` on an empty app
// directory and shows, in db-sync's own log lines and its /status: the restore on start, continuous
// replication while a small writer commits (each commit in the store within about a second, as a small
// segment object; proven by a `db-sync download` taken while it runs, which must hold every row), no
// request while the database is idle, and on stop (Ctrl-C, or after DEMO_SECONDS, default 40) the final
// base and the KEY.backup.YYYYMMDD_HHMMSS key. It ends by listing the bucket and checking the uploaded
// database with a separate reader.
//
// On S3 the single-writer lease is enforced (DB_SYNC_LEASE=required) and lives in a second, unversioned
// bucket, as the README advises for Ceph RGW (which enforces conditional writes only there): the data
// bucket then holds only the database's versions and its backup key, no lease versions or probe objects.
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { CreateBucketCommand, ListObjectVersionsCommand, PutBucketVersioningCommand, S3Client } from '@aws-sdk/client-s3';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cli = join(root, 'dist', 'cli.js');
const work = join(root, '.demo');
const useDir = process.argv.includes('--dir');
const seconds = Number(process.env.DEMO_SECONDS ?? 40);
const key = 'db.sqlite3';

// The AWS SDK prints a notice about its future Node.js support at this script's first request on Node < 22
// (db-sync's own CLI silences it too, see src/cli.ts); it is not about this demo.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const say = (text) => process.stderr.write(`\n\x1b[1m== ${text}\x1b[0m\n`);

function seedDatabase(path) {
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.exec(`CREATE TABLE polls_question (id INTEGER PRIMARY KEY, question_text TEXT NOT NULL, pub_date TEXT NOT NULL);
           CREATE INDEX polls_question_pub_date ON polls_question (pub_date);`);
  const insert = db.prepare('INSERT INTO polls_question (question_text, pub_date) VALUES (?, ?)');
  db.transaction(() => {
    for (let i = 1; i <= 1000; i += 1) insert.run(`Seed question ${i}?`, new Date(Date.UTC(2025, 0, 1, 0, i)).toISOString());
  })();
  db.close();
}

async function main() {
  rmSync(work, { recursive: true, force: true });
  mkdirSync(join(work, 'app'), { recursive: true });
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: root, stdio: 'inherit' });

  const env = {
    ...process.env,
    DB_S3_KEY: key,
    DB_LOCAL_PATH: join(work, 'app', key),
    DB_SYNC_INTERVAL: '5s',
    DB_SYNC_HEALTH_PORT: '8790',
  };
  let client;
  let bucket = 'db-sync-demo';
  if (useDir) {
    env.DB_SYNC_REPLICA_DIR = join(work, 'replica');
    delete env.DB_S3_BUCKET;
    say(`replica: local directory ${env.DB_SYNC_REPLICA_DIR}`);
  } else {
    say('starting the local S3 server (Ceph RADOS Gateway on 127.0.0.1; installs its Debian packages if missing)');
    execFileSync('bash', [join(root, 'scripts', 's3-server.sh'), 'start'], { stdio: 'inherit' });
    const server = JSON.parse(readFileSync(join(process.env.S3_SERVER_DIR ?? '/tmp/db-sync-s3', 'server.json'), 'utf8'));
    bucket = `db-sync-demo-${Date.now()}`;
    const leaseBucket = `${bucket}-locks`;
    Object.assign(env, {
      DB_SYNC_LEASE: 'required',
      DB_SYNC_LEASE_BUCKET: leaseBucket,
      AWS_ACCESS_KEY_ID: server.accessKeyId,
      AWS_SECRET_ACCESS_KEY: server.secretAccessKey,
      AWS_REGION: server.region,
      DB_S3_ENDPOINT: server.endpoint,
      DB_S3_FORCE_PATH_STYLE: 'true',
      DB_S3_BUCKET: bucket,
    });
    client = new S3Client({
      endpoint: server.endpoint,
      region: server.region,
      forcePathStyle: true,
      credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    });
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
    await client.send(new PutBucketVersioningCommand({ Bucket: bucket, VersioningConfiguration: { Status: 'Enabled' } }));
    await client.send(new CreateBucketCommand({ Bucket: leaseBucket }));
    say(`created versioned bucket s3://${bucket} (the database) and unversioned s3://${leaseBucket} (the lease) at ${server.endpoint}`);
  }

  say('seeding the replica with a sample database (1000 rows) using `db-sync upload`');
  const seed = join(work, 'seed.sqlite3');
  seedDatabase(seed);
  execFileSync(process.execPath, [cli, 'upload', '--log-level', 'warn'], { env: { ...env, DB_LOCAL_PATH: seed }, stdio: 'inherit' });

  say(`starting \`db-sync run\` on an empty app directory; stops after ${seconds}s or on Ctrl-C`);
  // Its own process group, so Ctrl-C reaches only this script, which forwards exactly one SIGINT.
  const daemon = spawn(process.execPath, [cli, 'run'], { env, stdio: 'inherit', detached: true });
  const exited = new Promise((resolve) => daemon.on('exit', (code) => resolve(code ?? 1)));

  // Ready once the lease is taken and the restore is done (`/readyz` 200): only then may the app open the file.
  const ready = async () => (await fetch(`http://127.0.0.1:${env.DB_SYNC_HEALTH_PORT}/readyz`).catch(() => undefined))?.status === 200;
  for (const deadline = Date.now() + 120_000; !(await ready());) {
    if (Date.now() > deadline || daemon.exitCode !== null) {
      daemon.kill('SIGINT');
      throw new Error('db-sync did not become ready (see its log above)');
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  say('a writer commits a row every second for 12 s; continuous replication ships each commit as a segment (/status every 3 s)');
  const app = new Database(env.DB_LOCAL_PATH, { fileMustExist: true, timeout: 5_000 });
  const insert = app.prepare('INSERT INTO polls_question (question_text, pub_date) VALUES (?, ?)');
  let written = 0;
  let lastStatus = '';
  let replicatedWhileRunning = false;
  const showStatus = async () => {
    const status = await fetch(`http://127.0.0.1:${env.DB_SYNC_HEALTH_PORT}/status`)
      .then((r) => r.json())
      .catch(() => undefined);
    const r = status?.replication;
    if (!r) return;
    const line = `   /status replication: ${r.state}, generation ${r.generation}, segments shipped ${r.segmentsShipped} (last seq ${r.shippedSeq}), lag ${r.lagMs} ms, bases ${r.bases}\n`;
    // Idle: the same line again would say nothing new (and no request was sent).
    if (line !== lastStatus) process.stderr.write(line);
    lastStatus = line;
  };
  const statusTimer = setInterval(showStatus, 3_000);
  const writer = setInterval(() => {
    insert.run(`Demo question ${++written}?`, new Date().toISOString());
    if (written === 12) {
      clearInterval(writer);
      setTimeout(() => void proveReplicated(), 2_000);
    }
  }, 1_000);
  // What a crash now would keep: a restore from the store, taken while db-sync runs, holds every commit.
  const proveReplicated = async () => {
    const copy = join(work, 'while-running.sqlite3');
    execFileSync(process.execPath, [cli, 'download', '--log-level', 'warn'], { env: { ...env, DB_LOCAL_PATH: copy }, stdio: 'inherit' });
    const db = new Database(copy, { readonly: true });
    const n = db.prepare('SELECT count(*) AS n FROM polls_question').get().n;
    db.close();
    replicatedWhileRunning = n === 1000 + written;
    say(
      `downloaded from the store while db-sync runs (base + segments): ${n} rows of ${1000 + written}; the database is idle now: no requests`,
    );
  };

  const stop = () => {
    clearInterval(writer);
    clearInterval(statusTimer);
    say('stopping db-sync with SIGINT (as Ctrl-C or ECS SIGTERM would): final base + backup key');
    daemon.kill('SIGINT');
  };
  const timer = setTimeout(stop, seconds * 1_000);
  process.once('SIGINT', () => {
    clearTimeout(timer);
    stop();
  });
  const code = await exited;
  clearTimeout(timer);
  app.close();
  say(`db-sync exited with code ${code}`);

  const restored = join(work, 'check.sqlite3');
  execFileSync(process.execPath, [cli, 'download', '--log-level', 'warn'], { env: { ...env, DB_LOCAL_PATH: restored }, stdio: 'inherit' });
  const check = new Database(restored, { readonly: true });
  const rows = check.prepare('SELECT count(*) AS n FROM polls_question').get().n;
  const integrity = check.pragma('integrity_check', { simple: true });
  check.close();
  say(`downloaded the latest snapshot again: ${rows} rows (1000 seeded + ${written} written), integrity_check: ${integrity}`);

  if (client) {
    const versions = await client.send(new ListObjectVersionsCommand({ Bucket: bucket }));
    say(`objects in s3://${bucket} (every version)`);
    for (const v of versions.Versions ?? []) {
      process.stderr.write(
        `  ${v.LastModified?.toISOString()}  ${String(v.Size).padStart(8)}  ${v.Key}${v.IsLatest ? '  (latest)' : ''}\n`,
      );
    }
    process.stderr.write(`\nTry it yourself:  eval "$(scripts/s3-server.sh env)" && aws s3 ls s3://${bucket}/\n`);
    client.destroy();
  } else {
    say(`files in ${env.DB_SYNC_REPLICA_DIR}`);
    execFileSync('ls', ['-la', env.DB_SYNC_REPLICA_DIR], { stdio: 'inherit' });
  }
  process.exitCode = code === 0 && rows === 1000 + written && integrity === 'ok' && replicatedWhileRunning ? 0 : 1;
}

main().catch((error) => {
  process.stderr.write(`demo failed: ${error.stack ?? error}\n`);
  process.exitCode = 1;
});
