/** Start bench/writer.ts (the "app") as a separate process and collect its per-insert timings. */
import { spawn } from 'node:child_process';
import { createWriteStream, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { WriterResult } from '../writer.js';
import { ROOT } from './s3.js';

export type { WriterResult };

const WRITER = join(ROOT, 'bench', 'writer.ts');

export interface AppWriter {
  /** Resolves with the writer's timings once it exits (after `seconds`, or after {@link AppWriter.stop}). */
  readonly done: Promise<WriterResult>;
  /** Ask it to stop (SIGTERM); it writes its results and exits. */
  stop(): void;
}

/**
 * Start the writer on `dbPath` at `rate` inserts a second for `seconds` (0: until stopped).
 * Resolves once it is about to insert its first row.
 */
export async function startWriter(
  dbPath: string,
  rate: number,
  seconds: number,
  out: string,
  logFile: string,
  extraArgs: readonly string[] = [],
): Promise<AppWriter> {
  rmSync(out, { force: true });
  const log = createWriteStream(logFile, { flags: 'a' });
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', WRITER, '--db', dbPath, '--rate', String(rate), '--seconds', String(seconds), '--out', out, ...extraArgs],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.stderr.pipe(log);
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout.once('data', () => resolve());
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`writer exited (${code}) before it started; see ${logFile}`)));
  });
  const done = new Promise<WriterResult>((resolve, reject) => {
    child.once('exit', (code) => {
      if (code !== 0) {
        reject(new Error(`writer exited with ${code}; see ${logFile}`));
        return;
      }
      try {
        resolve(JSON.parse(readFileSync(out, 'utf8')) as WriterResult);
      } catch (error) {
        reject(error as Error);
      }
    });
  });
  done.catch(() => undefined);
  await ready;
  return { done, stop: () => child.kill('SIGTERM') };
}
