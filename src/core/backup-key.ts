/**
 * Timestamped backup keys: `KEY.backup.YYYYMMDD_HHMMSS` in UTC — the format today's scripts already
 * write and their users already list and restore from. Conflict copies use the same stamp:
 * `KEY.conflict.YYYYMMDD_HHMMSS`.
 */

const PATTERN = /^(\d{4})(\d{2})(\d{2})_(\d{2})(\d{2})(\d{2})$/;

const pad = (n: number): string => String(n).padStart(2, '0');

/** What a timestamped key holds: a backup written at shutdown, or a local copy uploaded in a conflict. */
export type StampedKind = 'backup' | 'conflict';

/** The `kind` key for `key` at time `at` (UTC, second precision): `KEY.backup.YYYYMMDD_HHMMSS`. */
export function stampedKey(key: string, kind: StampedKind, at: Date): string {
  const stamp =
    `${at.getUTCFullYear()}${pad(at.getUTCMonth() + 1)}${pad(at.getUTCDate())}_` +
    `${pad(at.getUTCHours())}${pad(at.getUTCMinutes())}${pad(at.getUTCSeconds())}`;
  return `${stampedPrefix(key, kind)}${stamp}`;
}

/** The prefix every `kind` key of `key` starts with. */
export function stampedPrefix(key: string, kind: StampedKind): string {
  return `${key}.${kind}.`;
}

/** The time encoded in a `kind` key of `key`, or undefined when `candidate` is not one. */
export function parseStampedKey(key: string, kind: StampedKind, candidate: string): Date | undefined {
  const prefix = stampedPrefix(key, kind);
  if (!candidate.startsWith(prefix)) return undefined;
  const m = PATTERN.exec(candidate.slice(prefix.length));
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s] = m.map(Number) as [number, number, number, number, number, number, number];
  const at = new Date(Date.UTC(y, mo - 1, d, h, mi, s));
  // Reject impossible stamps such as 20250231 or 006000 that Date.UTC would roll over.
  const exact =
    at.getUTCMonth() === mo - 1 && at.getUTCDate() === d && at.getUTCHours() === h && at.getUTCMinutes() === mi && at.getUTCSeconds() === s;
  return exact ? at : undefined;
}

/** The backup key for `key` at time `at` (UTC, second precision). */
export function backupKey(key: string, at: Date): string {
  return stampedKey(key, 'backup', at);
}

/** The prefix every backup key of `key` starts with. */
export function backupPrefix(key: string): string {
  return stampedPrefix(key, 'backup');
}

/** The time encoded in a backup key of `key`, or undefined when `candidate` is not one. */
export function parseBackupKey(key: string, candidate: string): Date | undefined {
  return parseStampedKey(key, 'backup', candidate);
}

/** The key a backup key was made from (`KEY` of `KEY.backup.YYYYMMDD_HHMMSS`); `candidate` itself when it is no backup key. */
export function keyOfBackup(candidate: string): string {
  const m = /^(.+)\.backup\.\d{8}_\d{6}$/.exec(candidate);
  return m && parseBackupKey(m[1]!, candidate) ? m[1]! : candidate;
}
