/**
 * The images cannot be built here (no Docker engine), so their invariants are checked on the parsed
 * Dockerfiles (dockerfile-ast): what reaches the final image, who runs it, how it is health-checked and
 * stopped, and that the native driver is compiled where the compiler is and for the Node that runs it.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DockerfileParser, type Instruction } from 'dockerfile-ast';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..', '..');
const read = (path: string): string => readFileSync(join(root, path), 'utf8');

/**
 * Node.js LTS lines (nodejs/Release schedule): when each became Active LTS and reaches end of life.
 * The image must use the newest line that is in LTS today. Add a line here when a new one enters LTS.
 */
const NODE_LTS: ReadonlyArray<{ major: number; lts: string; eol: string }> = [
  { major: 22, lts: '2024-10-29', eol: '2027-04-30' },
  { major: 24, lts: '2025-10-28', eol: '2028-04-30' },
  { major: 26, lts: '2026-10-28', eol: '2029-04-30' },
];

interface Stage {
  /** The base image with build args resolved from their defaults. */
  readonly base: string;
  readonly name: string | null;
  readonly instructions: readonly Instruction[];
}

interface ParsedDockerfile {
  readonly stages: readonly Stage[];
  readonly final: Stage;
}

/** Parse a Dockerfile into stages, with `${ARG}`s in FROM lines resolved from the global ARG defaults. */
function parse(path: string): ParsedDockerfile {
  const dockerfile = DockerfileParser.parse(read(path));
  const args = new Map<string, string>();
  for (const arg of dockerfile.getInitialARGs()) {
    const property = arg.getProperty();
    if (property) args.set(property.getName(), property.getValue() ?? '');
  }
  const expand = (text: string): string =>
    text.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a?: string, b?: string) => args.get(a ?? b ?? '') ?? '');
  const stages: Array<{ base: string; name: string | null; instructions: Instruction[] }> = [];
  for (const instruction of dockerfile.getInstructions()) {
    if (instruction.getKeyword() === 'FROM') {
      const from = dockerfile.getFROMs().find((f) => f.getRange().start.line === instruction.getRange().start.line);
      stages.push({ base: expand(from?.getImage() ?? ''), name: from?.getBuildStage() ?? null, instructions: [] });
    } else {
      stages.at(-1)?.instructions.push(instruction);
    }
  }
  const final = stages.at(-1);
  if (!final) throw new Error(`${path}: no FROM`);
  return { stages, final };
}

const keyword = (stage: Stage, word: string): Instruction[] => stage.instructions.filter((i) => i.getKeyword() === word);
/** A RUN's command line, continuation lines joined. */
const runText = (i: Instruction): string =>
  i
    .getArguments()
    .map((a) => a.getValue())
    .join(' ');
/** The exec-form (JSON array) argument of CMD, ENTRYPOINT or HEALTHCHECK CMD. */
function execForm(i: Instruction): string[] {
  const text = i.getArgumentsContent() ?? '';
  const json = text.slice(text.indexOf('['));
  return JSON.parse(json) as string[];
}
const lastUser = (stage: Stage): string | undefined => keyword(stage, 'USER').at(-1)?.getArgumentsContent()?.trim();
/** Package installs of a toolchain: what must never run in a final stage. */
const COMPILERS =
  /\b(apt-get|apt|apk|yum|dnf)\s[^&;|]*\b(install|add)\s[^&;|]*(?<![\w.+-])(g\+\+|gcc|make|python3?|build-essential|clang)(?![\w.+-])/;
const NPM_INSTALL = /\bnpm\s+(ci|install|i|rebuild)\b/;

/**
 * Whether `dir` is declared a VOLUME in `stage` after the RUN that chowns it: ECS (and Docker) copy an
 * image directory's owner and mode into a task bind mount or new volume only when the image declares it a
 * VOLUME; without one the mount is root 0755 and a non-root db-sync cannot write beside the database.
 */
function volumeAfterChown(stage: Stage, dir: string): { declared: boolean; afterChown: boolean } {
  const volumes = keyword(stage, 'VOLUME');
  const declared = volumes.find((v) => {
    const text = (v.getArgumentsContent() ?? '').trim();
    const paths = text.startsWith('[') ? (JSON.parse(text) as string[]) : text.split(/\s+/);
    return paths.includes(dir);
  });
  const chown = stage.instructions.findIndex((i) => i.getKeyword() === 'RUN' && new RegExp(`chown\\s+\\S+\\s+${dir}\\b`).test(runText(i)));
  return {
    declared: declared !== undefined,
    afterChown: declared !== undefined && chown >= 0 && stage.instructions.indexOf(declared) > chown,
  };
}

describe('Dockerfile (the db-sync image)', () => {
  const { stages, final } = parse('Dockerfile');
  const build = stages.find((s) => s.name === 'build');

  it('has a build stage and a final stage', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    expect(build).toBeDefined();
    expect(final).not.toBe(build);
  });

  it('runs on the current Node LTS line, slim, with the build stage on the same Node and Debian release', () => {
    const match = /^node:(\d+)-(\w+)-slim$/.exec(final.base);
    expect(match, final.base).not.toBeNull();
    const major = Number(match?.[1]);
    const debian = match?.[2];
    const today = new Date().toISOString().slice(0, 10);
    const current = NODE_LTS.filter((l) => l.lts <= today && today < l.eol).at(-1);
    expect(major, `Node ${major} is not the newest LTS line on ${today}; see NODE_LTS`).toBe(current?.major);
    // The addon compiled in the build stage is loaded by the final stage's Node and glibc.
    expect(build?.base).toBe(`node:${major}-${debian}`);
    // ...and the driver version in the lock file supports that Node line.
    const engines = (JSON.parse(read('node_modules/better-sqlite3/package.json')) as { engines: { node: string } }).engines.node;
    expect(engines.split('||').map((e) => e.trim())).toContain(`${major}.x`);
  });

  it('compiles better-sqlite3 in the build stage and installs no compiler or package in the final stage', () => {
    const buildRuns = keyword(build as Stage, 'RUN').map(runText);
    expect(
      buildRuns.some((r) => /\bnpm rebuild better-sqlite3\b/.test(r) || (/\bnpm ci\b/.test(r) && !r.includes('--ignore-scripts'))),
    ).toBe(true);
    for (const run of keyword(final, 'RUN').map(runText)) {
      expect(run).not.toMatch(COMPILERS);
      expect(run).not.toMatch(NPM_INSTALL);
    }
  });

  it('copies node_modules into the final stage only from the build stage, after dev dependencies were pruned', () => {
    const copies = keyword(final, 'COPY').filter((c) => c.getArguments().some((a) => a.getValue().includes('node_modules')));
    expect(copies).toHaveLength(1);
    expect(copies[0]?.toString()).toMatch(/--from=build\b/);
    const buildRuns = keyword(build as Stage, 'RUN').map(runText);
    const lastInstall = buildRuns.findLastIndex((r) => NPM_INSTALL.test(r.replace(/npm ci --omit=dev/, '')));
    const prune = buildRuns.findLastIndex((r) => /\bnpm prune\b[^&;]*--omit=dev|\bnpm ci\b[^&;]*--omit=dev/.test(r));
    expect(prune).toBeGreaterThanOrEqual(0);
    expect(prune).toBeGreaterThanOrEqual(lastInstall);
    // In the prune's own command line, nothing installs again after it.
    const pruneRun = buildRuns[prune] ?? '';
    expect(pruneRun.slice(pruneRun.search(/npm (prune|ci)\b[^&;]*--omit=dev/) + 1)).not.toMatch(NPM_INSTALL);
  });

  it('declares /data a VOLUME after chowning it, so a fresh volume or ECS bind mount is writable by the image user', () => {
    expect(volumeAfterChown(final, '/data')).toEqual({ declared: true, afterChown: true });
  });

  it('runs as a non-root user', () => {
    const user = lastUser(final);
    expect(user).toBeDefined();
    expect(user?.split(':')[0]).not.toMatch(/^(root|0)$/);
  });

  it('is health-checked with `db-sync health`, stops on SIGTERM, and runs `db-sync run` by default', () => {
    const checks = keyword(final, 'HEALTHCHECK');
    expect(checks).toHaveLength(1);
    expect(execForm(checks[0] as Instruction).slice(0, 2)).toEqual(['db-sync', 'health']);
    expect(keyword(final, 'STOPSIGNAL').map((s) => s.getArgumentsContent())).toEqual(['SIGTERM']);
    expect(execForm(keyword(final, 'ENTRYPOINT')[0] as Instruction)).toEqual(['db-sync']);
    expect(execForm(keyword(final, 'CMD')[0] as Instruction)).toEqual(['run']);
    // `db-sync` (for the health check) and entrypoint.sh (for app images) are on PATH.
    const runs = keyword(final, 'RUN').map(runText).join('\n');
    expect(runs).toMatch(/ln -s \S+\/dist\/cli\.js \/usr\/local\/bin\/db-sync\b/);
    expect(runs).toMatch(/ln -s \S+\/entrypoint\.sh \/usr\/local\/bin\/entrypoint\.sh\b/);
  });

  it('sends only what it copies to the build context (.dockerignore)', () => {
    const ignore = read('.dockerignore')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#'));
    expect(ignore[0]).toBe('*');
    const included = ignore.filter((l) => l.startsWith('!')).map((l) => l.slice(1).replace(/\/$/, ''));
    const fromContext = stages
      .flatMap((s) => keyword(s, 'COPY'))
      .filter((c) => !c.toString().includes('--from='))
      .flatMap((c) =>
        c
          .getArguments()
          .slice(0, -1)
          .map((a) => a.getValue().replace(/^\.\//, '').replace(/\/$/, '')),
      );
    expect(fromContext.length).toBeGreaterThan(0);
    for (const path of fromContext) expect(included, path).toContain(path);
    for (const never of ['node_modules', 'dist', '.git', 'test']) expect(included).not.toContain(never);
  });
});

describe('docker/django/Dockerfile (db-sync inside an app image)', () => {
  const { stages, final } = parse('docker/django/Dockerfile');
  const dbSyncFinal = parse('Dockerfile').final;

  it('copies Node and db-sync from the db-sync image onto the same Debian release, compiling nothing', () => {
    expect(stages[0]?.name).toBe('db-sync');
    const debian = /-(\w+)-slim$/.exec(dbSyncFinal.base)?.[1];
    expect(final.base).toMatch(new RegExp(`^python:[\\d.]+-slim-${debian}$`));
    const fromDbSync = keyword(final, 'COPY')
      .filter((c) => c.toString().includes('--from=db-sync'))
      .map((c) => c.getArguments()[0]?.getValue());
    expect(fromDbSync).toEqual(['/usr/local/bin/node', '/opt/db-sync']);
    for (const run of keyword(final, 'RUN').map(runText)) expect(run).not.toMatch(COMPILERS);
  });

  it('declares the database directory /data a VOLUME after chowning it to the app user', () => {
    expect(volumeAfterChown(final, '/data')).toEqual({ declared: true, afterChown: true });
  });

  it('starts through entrypoint.sh as a non-root user, health-checked by db-sync, stopped by SIGTERM', () => {
    expect(execForm(keyword(final, 'ENTRYPOINT')[0] as Instruction)).toEqual(['entrypoint.sh']);
    expect(lastUser(final)?.split(':')[0]).not.toMatch(/^(root|0)$/);
    expect(execForm(keyword(final, 'HEALTHCHECK')[0] as Instruction).slice(0, 2)).toEqual(['db-sync', 'health']);
    expect(keyword(final, 'STOPSIGNAL').map((s) => s.getArgumentsContent())).toEqual(['SIGTERM']);
  });

  it('migrates at start, after the restore, never at build time, and execs the server so it gets the signal', () => {
    for (const run of keyword(final, 'RUN').map(runText)) expect(run).not.toMatch(/manage\.py\s+migrate/);
    const cmd = execForm(keyword(final, 'CMD')[0] as Instruction).join(' ');
    expect(cmd).toMatch(/manage\.py migrate\b.*&& exec gunicorn\b/);
  });

  it('settings_sqlite.py selects WAL mode and a busy timeout (read by Python itself)', () => {
    const script = ['import json, runpy, sys', 'db = runpy.run_path(sys.argv[1])["DATABASES"]["default"]', 'print(json.dumps(db))'].join(
      '\n',
    );
    const db = JSON.parse(
      execFileSync('python3', ['-c', script, join(root, 'docker', 'django', 'settings_sqlite.py')], {
        encoding: 'utf8',
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', DB_LOCAL_PATH: '/data/x.sqlite3' },
      }),
    ) as { ENGINE: string; NAME: string; OPTIONS: { init_command: string; timeout: number; transaction_mode: string } };
    expect(db.ENGINE).toBe('django.db.backends.sqlite3');
    expect(db.NAME).toBe('/data/x.sqlite3');
    expect(db.OPTIONS.init_command).toMatch(/PRAGMA journal_mode\s*=\s*WAL/i);
    expect(db.OPTIONS.timeout).toBeGreaterThan(0);
    expect(db.OPTIONS.transaction_mode).toBe('IMMEDIATE');
  });
});
