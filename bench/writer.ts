/**
 * The "app": a separate process inserting Django-style rows into the benchmark database at a steady rate
 * (one INSERT per transaction, autocommit, as a web request would), timing each one.
 *
 *   node --import tsx bench/writer.ts --db PATH --rate 200 [--seconds 20] [--journal wal|delete] [--synchronous FULL] --out result.json
 *
 * Runs until --seconds pass or SIGTERM, then writes JSON: per insert its latency (statement incl. commit),
 * its lag behind the schedule, its row id and when it committed (epoch ms), so a caller can tell exactly
 * which rows were committed before a given moment.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { INSERT_SQL, openAppDb, rowFactory } from './lib/dbgen.js';

export interface WriterResult {
  readonly rate: number;
  readonly startedAt: number;
  readonly latenciesMs: number[];
  readonly lagMs: number[];
  readonly ids: number[];
  readonly doneAt: number[];
  errors: number;
}

const { values } = parseArgs({
  options: {
    db: { type: 'string' },
    rate: { type: 'string', default: '200' },
    seconds: { type: 'string', default: '0' },
    out: { type: 'string' },
    seed: { type: 'string', default: '7' },
    // WAL, or a rollback journal (`delete`, Django's default when nobody sets journal_mode).
    journal: { type: 'string', default: 'wal' },
    synchronous: { type: 'string' },
  },
});
if (!values.db || !values.out) throw new Error('usage: writer.ts --db PATH --rate N [--seconds S] --out FILE');
const out = values.out;
const rate = Number(values.rate);
const seconds = Number(values.seconds);

const db = openAppDb(values.db, values.journal);
db.pragma('busy_timeout = 5000'); // Django's default "timeout" of 5 s
// Python's sqlite3 (Django) runs with the system SQLite's default, FULL, which fsyncs the WAL on every commit;
// better-sqlite3's build defaults to NORMAL in WAL mode (no fsync per commit). --synchronous FULL says it.
if (values.synchronous) db.pragma(`synchronous = ${values.synchronous}`);
const insert = db.prepare(INSERT_SQL);
const rows = rowFactory(Number(values.seed));
const now = (): number => performance.timeOrigin + performance.now();

const result: WriterResult = { rate, startedAt: now(), latenciesMs: [], lagMs: [], ids: [], doneAt: [], errors: 0 };
const periodMs = 1000 / rate;
const t0 = performance.now();
let i = 0;
let stopping = false;
let timer: NodeJS.Timeout | undefined;

function finish(): void {
  clearTimeout(timer);
  db.close();
  writeFileSync(out, JSON.stringify(result));
  process.exit(0);
}

function step(): void {
  if (stopping || (seconds > 0 && performance.now() - t0 >= seconds * 1000)) return finish();
  const scheduled = t0 + i * periodMs;
  const started = performance.now();
  try {
    const info = insert.run(...rows.next(now()));
    const done = performance.now();
    result.latenciesMs.push(done - started);
    result.lagMs.push(done - scheduled);
    result.ids.push(Number(info.lastInsertRowid));
    result.doneAt.push(performance.timeOrigin + done);
  } catch {
    result.errors += 1;
  }
  i += 1;
  timer = setTimeout(step, Math.max(0, t0 + i * periodMs - performance.now()));
}

process.on('SIGTERM', () => {
  stopping = true;
  if (timer) {
    clearTimeout(timer);
    finish();
  }
});
process.stdout.write('ready\n');
step();
