/**
 * A separate process that writes rows to a database continuously, as an app would, and reports each
 * committed row count on stdout ("committed N"), so a test knows exactly what was committed when.
 */
import { spawn, type ChildProcess } from 'node:child_process';
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

export function startWriter(dbPath: string, pauseMs = 5): Writer {
  const child = spawn(process.execPath, ['-e', SOURCE, dbPath, String(pauseMs)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let committed = 0;
  let buffer = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    buffer += chunk;
    const lines = buffer.split('\n');
    buffer = lines.pop() ?? '';
    for (const line of lines) {
      const n = Number(line.split(' ')[1]);
      if (Number.isFinite(n)) committed = Math.max(committed, n);
    }
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
