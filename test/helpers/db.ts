/** SQLite fixtures: temp dirs, databases with rows, and checks through the independent sqlite3 CLI. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll } from 'vitest';

const created: string[] = [];
// One hook per test file, registered at import (file level): an afterAll registered inside a test body,
// where most tempDir() calls happen, is never run, and the directories piled up in /tmp.
afterAll(() => {
  for (const dir of created.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A temp directory removed after the test file. */
export function tempDir(prefix = 'db-sync-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  created.push(dir);
  return dir;
}

/** Create a database with table `rows(id INTEGER PRIMARY KEY, body TEXT)` and `count` rows. */
export function createDatabase(path: string, count: number, options: { wal?: boolean; bodyBytes?: number } = {}): void {
  const db = new Database(path);
  try {
    if (options.wal !== false) db.pragma('journal_mode = WAL');
    db.exec('CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, body TEXT NOT NULL)');
    insertRows(db, count, options.bodyBytes ?? 64);
  } finally {
    db.close();
  }
}

export function insertRows(db: Database.Database, count: number, bodyBytes = 64): void {
  const insert = db.prepare('INSERT INTO rows (body) VALUES (?)');
  const body = 'x'.repeat(bodyBytes);
  db.transaction(() => {
    for (let i = 0; i < count; i += 1) insert.run(body);
  })();
}

/** Append rows through a separate connection (as an app would). */
export function addRows(path: string, count: number): void {
  const db = new Database(path, { fileMustExist: true });
  try {
    insertRows(db, count);
  } finally {
    db.close();
  }
}

/** Ask the sqlite3 CLI (not our driver) a question. */
export function sqlite3(path: string, sql: string): string {
  return execFileSync('sqlite3', [path, sql], { encoding: 'utf8' }).trim();
}

export function rowCount(path: string): number {
  return Number(sqlite3(path, 'SELECT count(*) FROM rows'));
}

export function integrity(path: string): string {
  return sqlite3(path, 'PRAGMA integrity_check');
}
