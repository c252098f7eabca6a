import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/helpers/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Integration and e2e tests share one S3 server and spawn processes; two cores go further in one fork.
    pool: 'forks',
    fileParallelism: true,
    maxWorkers: 2,
    // The SDK's Node-version notice (see src/cli.ts) would repeat in every test file's output.
    env: { AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
  },
});
