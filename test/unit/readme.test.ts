/** The README is a contract too: every setting, exit code and metadata key it documents must be real. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SETTINGS, type Setting } from '../../src/config.js';
import { ExitCode } from '../../src/errors.js';
import {
  META_CHAIN_CHECKSUM,
  META_CHAIN_GEN,
  META_CHAIN_SEQ,
  META_CHECKED,
  META_SHA256,
  META_SNAPSHOT_AT,
  META_SOURCE_HOST,
  META_TOOL_VERSION,
} from '../../src/core/metadata.js';

const readme = readFileSync(join(import.meta.dirname, '..', '..', 'README.md'), 'utf8');

describe('README', () => {
  it('documents every setting with its env var and flag', () => {
    for (const s of SETTINGS as readonly Setting[]) {
      expect(readme, s.env).toContain(`| \`${s.env}\` | \`--${s.flag}\``);
    }
  });

  it('documents every exit code', () => {
    for (const code of Object.values(ExitCode)) {
      expect(readme, String(code)).toMatch(new RegExp(`^\\| ${code} \\|`, 'm'));
    }
  });

  it('documents every metadata key', () => {
    for (const key of [
      META_SHA256,
      META_SNAPSHOT_AT,
      META_SOURCE_HOST,
      META_TOOL_VERSION,
      META_CHECKED,
      META_CHAIN_GEN,
      META_CHAIN_SEQ,
      META_CHAIN_CHECKSUM,
    ]) {
      expect(readme).toContain(`| \`${key}\` |`);
    }
  });

  it('gives the two commands, and .ci/run runs the test command', () => {
    expect(readme).toContain('npm ci && npm run demo');
    expect(readme).toContain('bash .ci/run');
    const ci = readFileSync(join(import.meta.dirname, '..', '..', '.ci', 'run'), 'utf8');
    expect(ci).toMatch(/^npm ci\b/m);
    expect(ci).toMatch(/^npm test$/m);
  });
});
