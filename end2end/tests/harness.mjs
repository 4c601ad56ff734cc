// Starts the real `moat` binary on a free port with a fresh SQLite data directory, and a headless
// Debian Chromium driven by playwright-core (never a browser Playwright would download).
import { spawn } from 'node:child_process';
import { chmodSync, copyFileSync, linkSync, mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const ADMIN_TOKEN = 'e2e-admin-token';

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

/// Starts `moat serve`. By default with the freshly built site as `--site-root`; with
/// `{ standalone: true }` the binary is copied into an empty temporary folder and started there, with
/// no `--site-root`: everything it serves comes from the binary itself.
export async function startMoat(extraArgs = [], { standalone = false } = {}) {
  let binary = process.env.MOAT_BIN;
  const siteRoot = process.env.MOAT_SITE_ROOT;
  if (!binary || (!siteRoot && !standalone)) throw new Error('set MOAT_BIN and MOAT_SITE_ROOT (scripts/test.sh does)');
  const dataDir = mkdtempSync(join(tmpdir(), 'moat-e2e-'));
  let cwd;
  if (standalone) {
    cwd = mkdtempSync(join(tmpdir(), 'moat-e2e-empty-'));
    // A hard link where the file system allows it (a debug build is hundreds of MB), else a copy.
    try {
      linkSync(binary, join(cwd, 'moat'));
    } catch {
      copyFileSync(binary, join(cwd, 'moat'));
      chmodSync(join(cwd, 'moat'), 0o755);
    }
    binary = join(cwd, 'moat');
  }
  const port = await freePort();
  const site = standalone ? [] : ['--site-root', siteRoot];
  const hidden = new Set(['DATABASE_URL', 'MOAT_SITE_ROOT']);
  const child = spawn(binary, ['--data-dir', dataDir, 'serve', '--addr', `127.0.0.1:${port}`, ...site, ...extraArgs], {
    cwd,
    env: { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !hidden.has(k))), MOAT_ADMIN_TOKEN: ADMIN_TOKEN },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout.on('data', (d) => (log += d));
  child.stderr.on('data', (d) => (log += d));
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 200; i++) {
    try {
      await fetch(base + '/');
      return { base, child, cwd, log: () => log };
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  child.kill('SIGKILL');
  throw new Error('moat did not start:\n' + log);
}

export async function api(base, method, path, body) {
  const response = await fetch(base + path, {
    method,
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, ...(typeof body === 'object' ? { 'Content-Type': 'application/json' } : {}) },
    body: typeof body === 'object' ? JSON.stringify(body) : body,
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return text;
}

export const MODELS = [
  { name: 'llama-e2e-secret', provider: 'MetaE2E', openness: 'open' },
  { name: 'gpt-e2e-hidden', provider: 'OpenE2E', openness: 'closed' },
];

/// Creates, fills and opens a study of `prompts` prompts, `perRater` comparisons per rater.
export async function openStudy(base, slug, prompts, perRater, extraSettings = {}) {
  await api(base, 'POST', '/api/v1/studies', {
    slug, title: `E2E ${slug}`, instructions: 'Choose the **better** answer.',
    settings: { items_per_rater: perRater, completion_code: `DONE-${slug}`, ...extraSettings },
  });
  const lines = [JSON.stringify({ models: MODELS })];
  for (let i = 0; i < prompts; i++) {
    lines.push(JSON.stringify({
      id: `p${i}`,
      prompt: `Prompt ${i}: explain recursion.`,
      responses: { 'llama-e2e-secret': `Answer one to ${i}:\n\n\`\`\`python\nprint(${i})\n\`\`\``, 'gpt-e2e-hidden': `Answer two to ${i}, **bold**.` },
    }));
  }
  await api(base, 'POST', `/api/v1/studies/${slug}/import`, lines.join('\n') + '\n');
  await api(base, 'POST', `/api/v1/studies/${slug}/status`, { status: 'open' });
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}
