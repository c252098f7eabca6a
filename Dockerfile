# syntax=docker/dockerfile:1
#
# The db-sync image: `docker build -t db-sync .`
#
#   sidecar  docker run db-sync                 (ENTRYPOINT db-sync, CMD run)
#   wrapper  copy /usr/local/bin/node and /opt/db-sync into an app image and use entrypoint.sh
#            (docker/django/README.md shows how)
#
# Two stages. better-sqlite3 is compiled, and the TypeScript built, in the full Node image with a C++
# toolchain; the final stage is node:26-trixie-slim (Node 26 is the current LTS line, Debian 13) holding
# only dist/, the production node_modules, package.json and entrypoint.sh, run by the unprivileged
# `node` user (uid 1000). No compiler, no TypeScript, no dev dependency reaches it. Both stages use the
# same Node major and the same Debian release, so the compiled addon matches the final image's Node ABI
# and glibc (test/unit/dockerfile.test.ts checks these invariants).

ARG NODE_MAJOR=26
ARG DEBIAN_RELEASE=trixie

# --- build -----------------------------------------------------------------------------------------
FROM node:${NODE_MAJOR}-${DEBIAN_RELEASE} AS build

# The full image ships this toolchain already; naming it keeps the build working if that changes.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /build

# Compile better-sqlite3 from source against this Node's own headers: no prebuilt binary is fetched.
ENV npm_config_build_from_source=true \
    npm_config_nodedir=/usr/local

COPY package.json package-lock.json ./
# --ignore-scripts: the `prepare` script would build before the sources are here; the one native
# module is then built explicitly.
RUN npm ci --ignore-scripts --no-audit --no-fund \
 && npm rebuild better-sqlite3

COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build \
 && npm prune --omit=dev --ignore-scripts \
 && chmod 0755 dist/cli.js \
 && node -e "require('better-sqlite3')(':memory:').close()"

# --- runtime ---------------------------------------------------------------------------------------
FROM node:${NODE_MAJOR}-${DEBIAN_RELEASE}-slim

# DB_LOCAL_PATH: the shared volume is mounted at /data (not /app, which would hide an app's own files);
# the same default as the Terraform module's db_directory. The health server stays on 127.0.0.1:8790:
# the HEALTHCHECK below runs inside this container, and nothing else should reach it.
ENV NODE_ENV=production \
    DB_LOCAL_PATH=/data/db.sqlite3

WORKDIR /opt/db-sync

# Owned by root and read-only to the `node` user: the process cannot modify its own code.
COPY --from=build /build/package.json ./package.json
COPY --from=build /build/node_modules ./node_modules
COPY --from=build /build/dist ./dist
COPY entrypoint.sh ./entrypoint.sh

# /data is created owned by `node` and declared a VOLUME below: Docker copies the image directory's owner
# into a new named volume, and ECS into a task bind mount only when the image declares the VOLUME (without
# it the mount is root 0755 and db-sync, as uid 1000, could not write beside the database; it refuses to
# start then, exit 7).
RUN chmod 0755 /opt/db-sync/entrypoint.sh \
 && ln -s /opt/db-sync/dist/cli.js /usr/local/bin/db-sync \
 && ln -s /opt/db-sync/entrypoint.sh /usr/local/bin/entrypoint.sh \
 && mkdir -p /data \
 && chown node:node /data \
 && db-sync --version

# After the chown: a VOLUME freezes the directory's content, owner and mode as they are at this point.
VOLUME ["/data"]

# Numeric, so Kubernetes' runAsNonRoot can verify it: this is the image's `node` user.
USER 1000:1000

# Ready (exit 0) once the restore is done and the sync loop runs; 8 otherwise. The start period covers
# a restore of a large database; failures during it do not count.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 CMD ["db-sync", "health"]

# db-sync takes SIGTERM as "final snapshot, upload, exit"; allow DB_SYNC_SHUTDOWN_TIMEOUT plus a
# margin (docker stop -t 30, compose stop_grace_period, ECS stopTimeout).
STOPSIGNAL SIGTERM

ENTRYPOINT ["db-sync"]
CMD ["run"]
