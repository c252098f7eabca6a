/**
 * `db-sync exec -- <command> [args…]`: run the app as db-sync's child, the way users deploy it in one
 * container. Restore (as `run` does), become ready, start the sync loop, then spawn the command with the
 * database in place and stdio passed through untouched. Signals the CLI receives (SIGTERM, SIGINT,
 * SIGHUP) are forwarded to the child. When the child exits, by itself or after a forwarded signal, the
 * final snapshot is taken and uploaded and the backup key written, and db-sync exits with the child's
 * own exit code, so the container reports what the app reported.
 *
 * Deadlines: after the first SIGTERM/SIGINT the child has DB_SYNC_CHILD_STOP_TIMEOUT to exit, then it
 * gets SIGKILL; the final sync then has its own DB_SYNC_SHUTDOWN_TIMEOUT. A second SIGTERM/SIGINT is
 * forwarded too, and aborts: db-sync still waits for the child (never leaving it running behind), then
 * skips or cancels the final sync and exits 130.
 *
 * Like every command, this module never touches `process`: signals arrive through `ctx.onSignal` and
 * `ctx.shutdown`, and the exit code is returned to the CLI.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { DbSyncError, ExitCode } from '../errors.js';
import type { Sidecar } from '../core/sidecar.js';
import { finishSidecar, startSidecar } from './run.js';
import type { CommandContext } from './context.js';

/** Exit codes of `exec` beyond the common table, chosen as POSIX shells choose them. */
export const ExecExitCode = {
  /** The command exists but could not be executed (permissions, not a program). */
  CannotExecute: 126,
  /** The command was not found. */
  NotFound: 127,
  /** Added to the signal number when the child was killed by a signal (SIGTERM → 143, SIGKILL → 137). */
  SignalBase: 128,
} as const;

/** What `exec` exits with, in the order a reader of the help text needs them. */
export const EXEC_EXIT_CODES: ReadonlyArray<readonly [code: string, meaning: string]> = [
  ['N', "the app's own exit code, once the final upload succeeded (a failed backup key after it is logged, not reported)"],
  ['128+N', 'the app was killed by signal N: 143 SIGTERM, 130 SIGINT, 137 SIGKILL (after DB_SYNC_CHILD_STOP_TIMEOUT)'],
  ['1', "the final sync failed: changes are NOT in the store (the app's own code is in the log)"],
  ['2', 'no command after --, or bad settings; nothing was started'],
  ['5', 'the lease was lost to another db-sync while the app ran: the app was stopped, the final sync skipped'],
  ['126', 'the command exists but cannot be executed; the app never ran, so nothing was synced'],
  ['127', 'the command was not found; the app never ran, so nothing was synced'],
  ['130', 'a second SIGTERM/SIGINT aborted the stop; the final sync was skipped or cancelled'],
];

/** The command could not be started; its exit code is 126 or 127, as a shell's would be. */
export class CommandStartError extends DbSyncError {
  private readonly code: number;

  constructor(message: string, code: number, options: { hint: string; cause: unknown }) {
    super('Failure', message, options);
    this.name = 'CommandStartError';
    this.code = code;
  }

  override get exitCode(): number {
    return this.code;
  }
}

/** How the child ended, as the `exit` event reports it. */
export interface ChildExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** The exit code a shell would report for this child: its own code, or 128 + the signal's number. */
export function shellExitCode(exit: ChildExit): number {
  if (exit.code !== null) return exit.code;
  const signo = exit.signal === null ? undefined : osConstants.signals[exit.signal];
  return signo === undefined ? ExitCode.Failure : ExecExitCode.SignalBase + signo;
}

/**
 * Resolve once the child is running, or reject with a {@link CommandStartError} when it cannot start
 * (Node reports that as an `error` event instead of `spawn`).
 */
function started(child: ChildProcess, command: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onSpawn = (): void => {
      child.off('error', onError);
      resolve();
    };
    const onError = (error: NodeJS.ErrnoException): void => {
      child.off('spawn', onSpawn);
      const notFound = error.code === 'ENOENT';
      reject(
        new CommandStartError(
          `exec: cannot start "${command}": ${error.message}`,
          notFound ? ExecExitCode.NotFound : ExecExitCode.CannotExecute,
          {
            hint: notFound
              ? 'the command is not on PATH (or the path is wrong); check the image and the command after --'
              : 'check that the file is executable (chmod +x) and is a program or a script with a #! line',
            cause: error,
          },
        ),
      );
    };
    child.once('spawn', onSpawn);
    child.once('error', onError);
  });
}

export async function execCommand(ctx: CommandContext): Promise<number> {
  const [command, ...args] = ctx.childCommand;
  if (command === undefined || command === '') {
    throw new DbSyncError('Usage', 'exec: no command to run', { hint: 'usage: db-sync exec -- <command> [args…]' });
  }
  const sidecar = await startSidecar(ctx);
  if (!sidecar) return ExitCode.Ok;
  if (ctx.shutdown.graceful.aborted) {
    ctx.log.warn({ reason: ctx.shutdown.reason }, 'stop requested before the app started; not starting it');
    return finishSidecar(ctx, sidecar);
  }
  return superviseChild(ctx, sidecar, command, args);
}

/** Run the child to its end, forwarding signals; then the final sync. Returns the exit code. */
async function superviseChild(ctx: CommandContext, sidecar: Sidecar, command: string, args: readonly string[]): Promise<number> {
  const { log, config, shutdown } = ctx;
  // Spawn, then subscribe in the same turn of the event loop, so no signal can fall between the two.
  const child = spawn(command, args, { stdio: 'inherit' });
  const exited = new Promise<ChildExit>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const running = (): boolean => child.exitCode === null && child.signalCode === null;

  let killTimer: NodeJS.Timeout | undefined;
  const unsubscribe = ctx.onSignal((signal) => {
    if (!running()) return;
    log.info({ signal, pid: child.pid }, 'forwarding signal to the app');
    child.kill(signal);
  });
  // The first stop request (SIGTERM/SIGINT, not SIGHUP) starts the app's stop deadline.
  const onStop = (): void => {
    killTimer ??= setTimeout(() => {
      if (!running()) return;
      log.warn(
        { pid: child.pid, deadlineMs: config.childStopTimeoutMs },
        'app did not exit in time after the stop signal; sending SIGKILL',
      );
      child.kill('SIGKILL');
    }, config.childStopTimeoutMs);
  };
  shutdown.graceful.addEventListener('abort', onStop, { once: true });
  // Lease lost: the app would go on writing into a database that is never uploaded again; stop it as a
  // stop request would (SIGTERM, then SIGKILL after the child-stop deadline).
  const onLeaseLost = (): void => {
    if (!running()) return;
    log.fatal(
      { pid: child.pid, deadlineMs: config.childStopTimeoutMs },
      'LEASE LOST while the app runs: stopping the app (SIGTERM, then SIGKILL after DB_SYNC_CHILD_STOP_TIMEOUT); its writes can no longer reach the store',
    );
    child.kill('SIGTERM');
    onStop();
  };
  sidecar.leaseLostSignal.addEventListener('abort', onLeaseLost, { once: true });
  const cleanUp = (): void => {
    clearTimeout(killTimer);
    unsubscribe();
    shutdown.graceful.removeEventListener('abort', onStop);
    sidecar.leaseLostSignal.removeEventListener('abort', onLeaseLost);
  };

  try {
    await started(child, command);
  } catch (error) {
    cleanUp();
    // The app never ran, so the database is exactly as restored (or kept): no final sync and no backup
    // key, or a crash-looping container with a typo in its command would write a backup per restart.
    await sidecar.stopWithoutSync();
    throw error;
  }
  // After the start, Node reports a failed kill() (EPERM: a setuid child, say) as an 'error' event; with
  // no listener that event would crash db-sync and lose the final sync.
  child.on('error', (error) => log.error({ err: error.message, pid: child.pid }, 'cannot signal the app'));
  // The program and how many arguments, never the arguments: apps take tokens and passwords there, and
  // no scrubber can tell which ones are secret (logs go to CloudWatch). Not even at debug.
  log.info({ program: command, argCount: args.length, pid: child.pid }, 'app started');
  if (sidecar.leaseLostSignal.aborted) onLeaseLost();

  const exit = await exited.finally(cleanUp);
  const childCode = shellExitCode(exit);
  log.info({ code: exit.code, signal: exit.signal, exitCode: childCode, stopRequested: shutdown.graceful.aborted }, 'app exited');

  if (sidecar.leaseLostSignal.aborted) {
    // The final sync is fenced and would fail; another db-sync owns the database now.
    sidecar.loop.abort();
    log.fatal(
      { appExitCode: childCode, exitCode: ExitCode.Refused },
      'FINAL SYNC SKIPPED (lease lost to another db-sync): changes since the last upload are NOT in the store',
    );
    return ExitCode.Refused;
  }
  if (shutdown.hard.aborted) {
    // The lease stays held (a successor waits out its TTL): an upload cancelled just now may still land.
    sidecar.loop.abort();
    log.fatal(
      { appExitCode: childCode },
      'FINAL SYNC SKIPPED (aborted by a second signal): changes since the last upload are NOT in the store',
    );
    return ExitCode.Aborted;
  }
  const syncCode = await finishSidecar(ctx, sidecar);
  // The app's changes are in the store: only the timestamped copy is missing, and the log says so.
  if (syncCode === ExitCode.BackupNotWritten) return childCode;
  if (syncCode !== ExitCode.Ok) {
    log.error({ appExitCode: childCode, exitCode: syncCode }, 'exiting with the final sync failure, not the app exit code');
    return syncCode;
  }
  return childCode;
}
