/**
 * A separate process that writes rows to a database continuously, as an app would, and reports each
 * committed row count on stdout ("committed N"), so a test knows exactly what was committed when.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { Readable } from 'node:stream';
import { createRequire } from 'node:module';

const driver = createRequire(import.meta.url).resolve('better-sqlite3');

const SOURCE = `
const Database = require(${JSON.stringify(driver)});
const db = new Database(process.argv[1], { timeout: 10000 });
db.pragma('journal_mode = WAL');
db.exec('CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, body TEXT NOT NULL)');
const insert = db.prepare('INSERT INTO rows (body) VALUES (?)');
let committed = 0;
let stopping = false;
process.on('SIGTERM', () => { stopping = true; });
function step() {
  if (stopping) { db.close(); process.stdout.write('stopped ' + committed + '\\n'); process.exit(0); }
  insert.run('row ' + committed);
  committed += 1;
  process.stdout.write('committed ' + committed + '\\n');
  setTimeout(step, Number(process.argv[2]));
}
step();
`;

export interface Writer {
  readonly child: ChildProcess;
  /** Highest row count reported committed so far. */
  committed(): number;
  /** SIGTERM the writer and resolve with its final committed count. */
  stop(): Promise<number>;
}

/** Call `onLine` with each complete line a child writes on `stream` (a partial last line waits for its end). */
export function onLines(stream: Readable | null, onLine: (line: string) => void): void {
  let pending = '';
  stream?.setEncoding('utf8').on('data', (chunk: string) => {
    const lines = (pending + chunk).split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) onLine(line);
  });
}

export function startWriter(dbPath: string, pauseMs = 5): Writer {
  const child = spawn(process.execPath, ['-e', SOURCE, dbPath, String(pauseMs)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let committed = 0;
  onLines(child.stdout, (line) => {
    const n = Number(line.split(' ')[1]);
    if (Number.isFinite(n)) committed = Math.max(committed, n);
  });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  return {
    child,
    committed: () => committed,
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
      return committed;
    },
  };
}

/** Options of {@link startBatchWriter}. */
export interface BatchWriterOptions {
  /** Set by the writer before its first write; by default it keeps the database's mode. */
  readonly journalMode?: 'wal' | 'delete';
  /** Each transaction also rewrites one of the first 1,000 rows (pages spread over the file change). */
  readonly withUpdate?: boolean;
  /** Resolve once this many rows are committed (the writer is then known to be running). */
  readonly readyAt: number;
}

/**
 * A writer process committing 5 rows per transaction as fast as it can into an existing `rows (id, body)`
 * table, reporting its committed count after each COMMIT. Resolves once `readyAt` rows are committed;
 * rejects if the writer exits before that.
 */
export async function startBatchWriter(
  path: string,
  options: BatchWriterOptions,
): Promise<{ committed: () => number; stop: () => Promise<void> }> {
  const source = `
    const Database = require(${JSON.stringify(driver)});
    const db = new Database(process.argv[1], { timeout: 10000 });
    ${options.journalMode ? `db.pragma('journal_mode = ${options.journalMode}');` : ''}
    const insert = db.prepare('INSERT INTO rows (body) VALUES (?)');
    const update = db.prepare('UPDATE rows SET body = ? WHERE id = ?');
    const batch = db.transaction((n) => {
      for (let i = 0; i < 5; i += 1) insert.run('w' + n + '-' + i);
      ${options.withUpdate ? `update.run('u' + n, 1 + (n * 7919) % 1000);` : ''}
    });
    let committed = 0;
    process.on('SIGTERM', () => { db.close(); process.exit(0); });
    (function step() { batch(committed); committed += 5; process.stdout.write(committed + '\\n'); setImmediate(step); })();
  `;
  const child = spawn(process.execPath, ['-e', source, path], { stdio: ['ignore', 'pipe', 'inherit'] });
  let committed = 0;
  onLines(child.stdout, (line) => (committed = Math.max(committed, Number(line))));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    child.kill('SIGTERM');
    await exited;
  };
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', () => committed >= options.readyAt && resolve());
      child.once('exit', (code) => reject(new Error(`writer exited early with ${code}`)));
    });
  } catch (error) {
    await stop();
    throw error;
  }
  return { committed: () => committed, stop };
}
