/**
 * A real app for `db-sync exec` and entrypoint.sh tests: a Node script that opens the database at
 * `DB_LOCAL_PATH` (the variable db-sync itself reads, inherited as an app in the same container would),
 * commits one row at a time and reports each commit on stdout, so a test knows what was committed.
 *
 * How it ends is chosen by its environment:
 * - `APP_ON_TERM`: what SIGTERM does: `exit:N` (close the database, exit N), `reraise` (close, then die
 *   by SIGTERM itself: 143), `ignore` (keep writing: only SIGKILL stops it), `ignore-once` (ignore the
 *   first SIGTERM, exit 0 on the second). Default `exit:0`.
 * - `APP_EXIT_AFTER`: `K:N` — commit K rows, then exit N by itself.
 * - `APP_PAUSE_MS`: pause between rows (default 5).
 *
 * Output, all of it fixed so a test can check the pass-through byte for byte:
 * - stdout: `app: start rows=R`, then `committed 1`, `committed 2`, …, on signals `app: got SIGTERM`
 *   (or SIGHUP), and last `app: exit N` when it exits by itself or on `exit:N`;
 * - stderr: exactly {@link APP_STDERR_START} at start and {@link APP_STDERR_END} when it exits.
 */
import { createRequire } from 'node:module';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from './db.js';
import { createBucket, s3Env, seededBucket } from './s3.js';

const driver = createRequire(import.meta.url).resolve('better-sqlite3');

/** What the app writes to stderr when it starts: non-ASCII on purpose, so a re-encoding would show. */
export const APP_STDERR_START = 'app: stderr line, untouched ✓ äöü\n';
/** What the app writes to stderr when it exits (not when it is killed). */
export const APP_STDERR_END = 'app: bye\n';

const SOURCE = `'use strict';
const Database = require(${JSON.stringify(driver)});
const path = process.env.DB_LOCAL_PATH;
const onTerm = process.env.APP_ON_TERM || 'exit:0';
const exitAfter = process.env.APP_EXIT_AFTER ? process.env.APP_EXIT_AFTER.split(':').map(Number) : undefined;
const pauseMs = Number(process.env.APP_PAUSE_MS || 5);
const out = (line) => process.stdout.write(line + '\\n');

const db = new Database(path, { timeout: 10000 });
db.pragma('journal_mode = WAL');
db.exec('CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, body TEXT NOT NULL)');
out('app: start rows=' + db.prepare('SELECT count(*) AS n FROM rows').get().n);
process.stderr.write(${JSON.stringify(APP_STDERR_START)});
const insert = db.prepare('INSERT INTO rows (body) VALUES (?)');
let committed = 0;
let terms = 0;
let timer;

function finish(code) {
  clearTimeout(timer);
  db.close();
  out('app: exit ' + code);
  process.stderr.write(${JSON.stringify(APP_STDERR_END)}, () => process.exit(code));
}

process.on('SIGHUP', () => out('app: got SIGHUP'));
process.on('SIGTERM', () => {
  terms += 1;
  out('app: got SIGTERM');
  if (onTerm.startsWith('exit:')) return finish(Number(onTerm.slice(5)));
  if (onTerm === 'ignore-once' && terms > 1) return finish(0);
  if (onTerm === 'reraise') {
    clearTimeout(timer);
    db.close();
    process.removeAllListeners('SIGTERM');
    process.kill(process.pid, 'SIGTERM');
  }
});

function step() {
  insert.run('row ' + (committed + 1));
  committed += 1;
  out('committed ' + committed);
  if (exitAfter && committed >= exitAfter[0]) return finish(exitAfter[1]);
  timer = setTimeout(step, pauseMs);
}
step();
`;

/** Write the app into `dir`; returns its path (run it as `node <path>`). */
export function writeChildApp(dir: string): string {
  const path = join(dir, 'app.cjs');
  writeFileSync(path, SOURCE);
  return path;
}

/** Where an `exec` or entrypoint.sh test starts from. */
export interface AppSetup {
  readonly bucket: string;
  readonly dir: string;
  readonly dbPath: string;
  readonly app: string;
  readonly env: Record<string, string>;
}

/**
 * A bucket holding a `seedRows`-row database at `db.sqlite3` (none for 0), a temp dir with the app in it,
 * and db-sync's environment: the database at `dir/db.sqlite3`, a 1 s interval, no health server port.
 */
export async function appSetup(seedRows = 50): Promise<AppSetup> {
  const { bucket, dir } = seedRows > 0 ? await seededBucket(seedRows) : { bucket: (await createBucket()).bucket, dir: tempDir() };
  const dbPath = join(dir, 'db.sqlite3');
  const env = { ...s3Env(bucket), DB_LOCAL_PATH: dbPath, DB_SYNC_INTERVAL: '1s', DB_SYNC_HEALTH_PORT: '0' };
  return { bucket, dir, dbPath, app: writeChildApp(dir), env };
}

/** The app's lines in a stdout it shares with db-sync's JSON log lines, in order. */
export function appLines(stdout: string): string[] {
  return stdout.split('\n').filter((line) => line !== '' && !line.startsWith('{'));
}

/** The highest row count the app reported committed in `stdout` (0 before its first row). */
export function lastCommitted(stdout: string): number {
  let last = 0;
  for (const line of appLines(stdout)) {
    const match = /^committed (\d+)$/.exec(line);
    if (match) last = Number(match[1]);
  }
  return last;
}

/**
 * Check the app's stdout came through whole and in order: the start line, `committed 1..N` without a
 * gap, then only the `app: …` lines it prints on signals and exit. Returns N.
 */
export function checkAppOutput(stdout: string, startRows: number): { committed: number; tail: string[] } {
  const lines = appLines(stdout);
  if (lines[0] !== `app: start rows=${startRows}`) throw new Error(`app output starts with ${JSON.stringify(lines[0])}`);
  let n = 0;
  const tail: string[] = [];
  for (const line of lines.slice(1)) {
    const match = /^committed (\d+)$/.exec(line);
    if (match) {
      if (Number(match[1]) !== n + 1) throw new Error(`app output: "${line}" after committed ${n}`);
      n += 1;
    } else if (line.startsWith('app: ')) {
      tail.push(line);
    } else {
      throw new Error(`unexpected output line ${JSON.stringify(line)}`);
    }
  }
  return { committed: n, tail };
}
