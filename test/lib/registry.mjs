// A real OCI distribution registry (Debian's docker-registry) for pull tests: on 127.0.0.1 at a
// free port, over TLS with a certificate made for the run. containerd trusts it through
// SSL_CERT_FILE (Go reads it), ctr through a hosts directory, so nothing on the machine changes;
// stop() leaves nothing behind.
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Answers once the registry serves its API root (any HTTP answer over TLS). */
function serving(host, cert) {
  return spawnSync('curl', ['-sf', '--cacert', cert, `https://${host}/v2/`], { timeout: 5000 }).status === 0;
}

export async function startRegistry() {
  for (const tool of ['docker-registry', 'openssl', 'skopeo', 'curl']) {
    if (spawnSync('which', [tool]).status !== 0) throw new Error(`${tool} is not installed (.ci/install-deps.sh)`);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ubreg-'));
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2',
    '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  fs.writeFileSync(path.join(dir, 'config.yml'), [
    'version: 0.1',
    'log:', '  level: warn',
    'storage:', '  filesystem:', `    rootdirectory: ${dir}/data`,
    'http:', `  addr: ${host}`, '  tls:', `    certificate: ${cert}`, `    key: ${key}`, '',
  ].join('\n'));
  // ctr's client-side pulls take registry settings from a hosts directory (containerd's
  // certs.d layout); without it ctr talks plain HTTP to a loopback address
  const hostsDir = path.join(dir, 'hosts');
  fs.mkdirSync(path.join(hostsDir, host), { recursive: true });
  fs.writeFileSync(path.join(hostsDir, host, 'hosts.toml'),
    `server = "https://${host}"\n[host."https://${host}"]\n  capabilities = ["pull", "resolve"]\n  ca = "${cert}"\n`);
  const log = fs.openSync(path.join(dir, 'registry.log'), 'a');
  const proc = spawn('docker-registry', ['serve', path.join(dir, 'config.yml')], { stdio: ['ignore', log, log] });
  fs.closeSync(log);
  let exited = false;
  proc.on('exit', () => { exited = true; });
  for (let i = 0; !serving(host, cert); i++) {
    if (exited || i > 100) {
      const why = fs.readFileSync(path.join(dir, 'registry.log'), 'utf8').trim().split('\n').pop();
      proc.kill('SIGKILL');
      throw new Error(`docker-registry did not start on ${host}: ${why}`);
    }
    await sleep(100);
  }
  return {
    host,
    /** containerd's environment: its transfer service then trusts this registry's certificate. */
    env: { SSL_CERT_FILE: cert },
    /** For `ctr images pull --hosts-dir` (pulls on ctr's side). */
    hostsDir,
    /** Push a docker-archive or oci-archive as NAME:TAG (skopeo gzips the layers, as docker push does). */
    push(archive, ref) {
      const transport = archive.endsWith('.oci-archive.tar') ? 'oci-archive' : 'docker-archive';
      execFileSync('skopeo', ['copy', '-q', '--dest-tls-verify=false', `${transport}:${archive}`, `docker://${host}/${ref}`], { stdio: ['ignore', 'ignore', 'pipe'] });
      return `${host}/${ref}`;
    },
    async stop() {
      if (!exited) {
        proc.kill('SIGTERM');
        for (let i = 0; i < 50 && !exited; i++) await sleep(100);
        if (!exited) proc.kill('SIGKILL');
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
