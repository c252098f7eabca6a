/**
 * Crash-safe file writes: every file db-sync writes goes temp → fsync → rename → fsync the directory.
 *
 * After a crash at any point, the destination holds either its old content or the new content, never a
 * mix; a stray temp file is all that can remain, and its name says whose it is ({@link TEMP_MARKER}).
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { copyFile, mkdir, open, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** Every temp file db-sync creates has this in its name, so leftovers can be found and removed. */
export const TEMP_MARKER = '.db-sync-tmp-';

/** Files db-sync creates hold database content: owner read/write only. */
export const FILE_MODE = 0o600;

/** A unique temp path in the same directory as `path` (same filesystem, so rename is atomic). */
export function tempPathBeside(path: string, purpose: string): string {
  return join(dirname(path), `.${basename(path)}${TEMP_MARKER}${purpose}-${randomBytes(6).toString('hex')}`);
}

/** fsync a directory so a rename inside it survives power loss. */
export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** fsync a file's data. */
export async function fsyncFile(path: string): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Remove a file if it exists; never throws. */
export async function removeQuietly(path: string): Promise<void> {
  await rm(path, { force: true }).catch(() => undefined);
}

/**
 * Move a finished, fsynced temp file over `destination` atomically and make the rename durable.
 * On failure the temp file is removed and `destination` is unchanged.
 */
export async function commitTempFile(tempPath: string, destination: string): Promise<void> {
  try {
    await rename(tempPath, destination);
  } catch (error) {
    await removeQuietly(tempPath);
    throw error;
  }
  await fsyncDir(dirname(destination));
}

/** Write `data` to `destination` atomically (temp, fsync, rename, fsync dir). */
export async function atomicWriteFile(destination: string, data: string | Uint8Array): Promise<void> {
  const temp = tempPathBeside(destination, 'write');
  try {
    await writeFile(temp, data, { mode: FILE_MODE });
    await fsyncFile(temp);
  } catch (error) {
    await removeQuietly(temp);
    throw error;
  }
  await commitTempFile(temp, destination);
}

/** Copy `source` to `destination` atomically (copy-on-write where the filesystem can, else a plain copy). */
export async function atomicCopyFile(source: string, destination: string): Promise<void> {
  await mkdir(dirname(destination), { recursive: true });
  const temp = tempPathBeside(destination, 'copy');
  try {
    await copyFile(source, temp, constants.COPYFILE_FICLONE);
    await fsyncFile(temp);
  } catch (error) {
    await removeQuietly(temp);
    throw error;
  }
  await commitTempFile(temp, destination);
}
