/**
 * Error classes and the exit-code table.
 *
 * Every error a user can cause is a {@link DbSyncError}: it carries a `kind` that maps to a documented exit
 * code and a `hint` that tells the user what to change. Everything else that escapes is a bug or an
 * unexpected environment failure and exits with {@link ExitCode.Failure}.
 */

/** Exit codes. Documented in the README ("Exit codes"); never renumber one. */
export const ExitCode = {
  /** The command did what it was asked. */
  Ok: 0,
  /** A runtime failure: retries exhausted, the final sync failed, or an unexpected error. */
  Failure: 1,
  /** Bad configuration or command line. Nothing was touched. */
  Usage: 2,
  /** The storage refused us for a reason retrying cannot fix: credentials, permissions, missing bucket. */
  StorageAccess: 3,
  /** The thing asked for does not exist (no remote snapshot, no such version, no local database). */
  NotFound: 4,
  /** Refused to act because it could lose data (an existing file without --force, a diverged copy). */
  Refused: 5,
  /** A database or snapshot failed its integrity or checksum verification. */
  Corrupt: 6,
  /** The local database cannot be read: not SQLite, locked for too long, unreadable path. */
  LocalDatabase: 7,
  /** The health probe found the daemon not ready or not reachable. */
  Unhealthy: 8,
  /**
   * The final upload is in the store, but the timestamped backup key (`KEY.backup.*`) could not be written.
   * Not a data loss, not a success: the operator has a missing backup to look at. `exec` keeps the app's code.
   */
  BackupNotWritten: 9,
  /** Stopped by a second signal before a graceful stop finished. */
  Aborted: 130,
} as const;

export type ErrorKind = Exclude<keyof typeof ExitCode, 'Ok'>;

export interface DbSyncErrorOptions {
  /** What the user should do about it. Shown after the message. */
  hint?: string | undefined;
  cause?: unknown;
}

/** An error with a user-facing meaning: a kind (exit code) and a hint that names the fix. */
export class DbSyncError extends Error {
  readonly kind: ErrorKind;
  readonly hint: string | undefined;

  constructor(kind: ErrorKind, message: string, options: DbSyncErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'DbSyncError';
    this.kind = kind;
    this.hint = options.hint;
  }

  get exitCode(): number {
    return ExitCode[this.kind];
  }
}

/**
 * A storage operation failed. `retryable` says whether trying again later can help (throttling, 5xx,
 * network). Non-retryable storage errors abort retries at once.
 */
export class StorageError extends DbSyncError {
  readonly retryable: boolean;
  /** The backend's own short code (e.g. `AccessDenied`, `SlowDown`, `ECONNREFUSED`), for logs and metrics. */
  readonly code: string;

  constructor(message: string, options: DbSyncErrorOptions & { retryable: boolean; code: string; kind?: ErrorKind }) {
    super(options.kind ?? (options.retryable ? 'Failure' : 'StorageAccess'), message, options);
    this.name = 'StorageError';
    this.retryable = options.retryable;
    this.code = options.code;
  }
}

/** The operation was cancelled through its AbortSignal. */
export class AbortedError extends DbSyncError {
  constructor(message = 'operation aborted', cause?: unknown) {
    super('Aborted', message, { cause });
    this.name = 'AbortedError';
  }
}

/** Coerce anything thrown into an Error, so callers can rely on `.message`. */
/** errno codes of a failing local file (the disk, its permissions, this process's limits), never of the network. */
const LOCAL_FILE_CODES = new Set(['ENOSPC', 'EDQUOT', 'EFBIG', 'EROFS', 'EACCES', 'EPERM', 'EMFILE', 'ENFILE', 'EIO', 'EISDIR', 'ENOTDIR']);

/**
 * Whether `error` is a local file failing (no space, no permission, too many open files), not the store:
 * a download that cannot write its temp file must say so, not "cannot reach the S3 endpoint" and retry.
 */
export function isLocalFileError(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && LOCAL_FILE_CODES.has(code) && !(error instanceof DbSyncError);
}

export function toError(value: unknown): Error {
  if (value instanceof Error) return value;
  return new Error(typeof value === 'string' ? value : JSON.stringify(value));
}

/**
 * Wrap an error with a short lowercase operation prefix ("upload snapshot: …") while keeping its kind,
 * hint and retryability, so the message reads as a chain and the exit code stays right.
 */
export function wrapError(operation: string, error: unknown): Error {
  const err = toError(error);
  const message = `${operation}: ${err.message}`;
  if (err instanceof StorageError) {
    return new StorageError(message, {
      retryable: err.retryable,
      code: err.code,
      kind: err.kind,
      hint: err.hint,
      cause: err,
    });
  }
  if (err instanceof AbortedError) return new AbortedError(message, err);
  if (err instanceof DbSyncError) return new DbSyncError(err.kind, message, { hint: err.hint, cause: err });
  return new Error(message, { cause: err });
}

/** True when the error (or the signal) means "cancelled", not "failed". */
export function isAbort(error: unknown, signal?: AbortSignal): boolean {
  if (signal?.aborted === true) return true;
  if (error instanceof AbortedError) return true;
  const name = error instanceof Error ? error.name : '';
  return name === 'AbortError';
}

/**
 * The short kind of a failure, for logs, /status and the `db_sync_failures_total{kind}` label: the storage
 * error's code (`AccessDenied`, `SlowDown`…), else the db-sync error kind, else `Error`. One place, so the
 * log line and the metric always agree.
 */
export function failureKind(error: Error): string {
  if (error instanceof StorageError) return error.code;
  if (error instanceof DbSyncError) return error.kind;
  return 'Error';
}

/**
 * The final upload is in the store but writing the backup key failed: say exactly that (exit code
 * {@link ExitCode.BackupNotWritten}), never "changes are not in the store".
 */
export function backupNotWritten(error: unknown): DbSyncError {
  const err = toError(error);
  return new DbSyncError('BackupNotWritten', `final upload done; backup key NOT written: ${err.message}`, {
    hint:
      'the database is safe at KEY; only its timestamped copy (KEY.backup.*) is missing. Check that the role may read object ' +
      'versions and write KEY.backup.* (s3:GetObjectVersion, s3:PutObject), then run `db-sync shutdown` to write one',
    cause: err,
  });
}

/** The exit code for any thrown value. */
export function exitCodeFor(error: unknown): number {
  return error instanceof DbSyncError ? error.exitCode : ExitCode.Failure;
}

/** Throw {@link AbortedError} if the signal has fired. */
export function throwIfAborted(signal: AbortSignal | undefined, what = 'operation'): void {
  if (signal?.aborted === true) throw new AbortedError(`${what} aborted`, signal.reason);
}
