/**
 * Child processes measured by GNU time (`/usr/bin/time`): wall time (ours, from spawn to exit), user and
 * system CPU seconds and peak RSS (the kernel's ru_maxrss for the process, which counts its threads, so a
 * Node process with worker threads is measured whole).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, readFileSync, rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';

export const GNU_TIME = '/usr/bin/time';

export interface Usage {
  readonly wallS: number;
  readonly userS: number;
  readonly sysS: number;
  /** user + sys */
  readonly cpuS: number;
  readonly maxRssMB: number;
  readonly exitCode: number | null;
  /** Set when the process was killed by a signal (GNU time reports it). */
  readonly signal?: string | undefined;
  /** Wall time split into steps, in seconds (what each step of a tool took). */
  readonly parts?: Readonly<Record<string, number>> | undefined;
}

export interface RunOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
  /** Where stdout and stderr go (appended). */
  readonly logFile: string;
  /** Called with every stdout line (for JSON log parsing). */
  readonly onLine?: (line: string) => void;
}

let counter = 0;

function parseTimeFile(path: string): Omit<Usage, 'wallS' | 'exitCode'> & { exit?: number; signal?: string } {
  const text = readFileSync(path, 'utf8');
  // Our format line is the last one; GNU time may print "Command terminated by signal N" first.
  const lines = text.trim().split('\n');
  const last = lines[lines.length - 1] ?? '';
  const [user, sys, rssKb] = last.trim().split(/\s+/).map(Number);
  const signalLine = lines.find((l) => l.startsWith('Command terminated by signal'));
  return {
    userS: user ?? Number.NaN,
    sysS: sys ?? Number.NaN,
    cpuS: (user ?? Number.NaN) + (sys ?? Number.NaN),
    maxRssMB: (rssKb ?? Number.NaN) / 1024,
    signal: signalLine ? signalLine.replace('Command terminated by signal ', 'signal ') : undefined,
  };
}

/** A running, measured process. */
export interface Measured {
  /** The measured program's own pid (not GNU time's), for signals. */
  readonly pid: number;
  readonly child: ChildProcess;
  readonly startedAt: number;
  /** Resolves when it exits, with its usage. */
  readonly done: Promise<Usage>;
  signal(sig: NodeJS.Signals): void;
}

/** Start `cmd args` under GNU time. Resolves once the measured program's pid is known. */
export async function startMeasured(cmd: string, args: readonly string[], options: RunOptions): Promise<Measured> {
  const timeFile = join('/tmp', `db-sync-bench-time-${process.pid}-${++counter}.txt`);
  const log = createWriteStream(options.logFile, { flags: 'a' });
  log.write(`\n$ ${cmd} ${args.join(' ')}\n`);
  const startedAt = performance.now();
  const child = spawn(GNU_TIME, ['-f', '%U %S %M', '-o', timeFile, cmd, ...args], {
    env: options.env ?? process.env,
    cwd: options.cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let buffer = '';
  child.stdout.on('data', (chunk: Buffer) => {
    log.write(chunk);
    if (!options.onLine) return;
    buffer += chunk.toString('utf8');
    const lines = buffer.split('\n');
    buffer = lines.pop() ?? '';
    for (const line of lines) options.onLine(line);
  });
  child.stderr.on('data', (chunk: Buffer) => log.write(chunk));
  const done = new Promise<Usage>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      const wallS = (performance.now() - startedAt) / 1000;
      log.end();
      try {
        const u = parseTimeFile(timeFile);
        rmSync(timeFile, { force: true });
        resolve({ ...u, wallS, exitCode: code });
      } catch (error) {
        reject(error as Error);
      }
    });
  });
  // GNU time forks the program at once; find it among time's children.
  let pid = 0;
  for (let i = 0; i < 200 && pid === 0; i += 1) {
    try {
      const children = readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim();
      pid = Number(children.split(/\s+/)[0] ?? 0) || 0;
    } catch {
      break;
    }
    if (pid === 0) await sleep(5);
  }
  if (pid === 0) throw new Error(`could not find the pid of ${cmd} under ${GNU_TIME}`);
  return {
    pid,
    child,
    startedAt,
    done,
    signal: (sig) => {
      try {
        process.kill(pid, sig);
      } catch {
        // already gone
      }
    },
  };
}

/** Run `cmd args` to completion under GNU time. @throws when it exits non-zero. */
export async function runMeasured(cmd: string, args: readonly string[], options: RunOptions): Promise<Usage> {
  const m = await startMeasured(cmd, args, options);
  const usage = await m.done;
  if (usage.exitCode !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${usage.exitCode} (log: ${options.logFile})`);
  return usage;
}

/** Run a plain command (not measured) to completion; returns stdout. @throws on non-zero exit. */
export function run(cmd: string, args: readonly string[], options: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: options.env ?? process.env, cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (err += c.toString('utf8')));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${err.trim().slice(-2000)}`));
    });
  });
}

/** Sum of two sequential measured steps (a script of two commands). */
export function sumUsage(a: Usage, b: Usage): Usage {
  return {
    wallS: a.wallS + b.wallS,
    userS: a.userS + b.userS,
    sysS: a.sysS + b.sysS,
    cpuS: a.cpuS + b.cpuS,
    maxRssMB: Math.max(a.maxRssMB, b.maxRssMB),
    exitCode: b.exitCode,
    parts: { ...a.parts, ...b.parts },
  };
}

/** SIGTERM `m` and wait for it; SIGKILL after `timeoutMs`. @returns its usage. */
export async function stopMeasured(m: Measured, timeoutMs = 60_000): Promise<Usage> {
  m.signal('SIGTERM');
  const timer = setTimeout(() => m.signal('SIGKILL'), timeoutMs);
  try {
    return await m.done;
  } finally {
    clearTimeout(timer);
  }
}
