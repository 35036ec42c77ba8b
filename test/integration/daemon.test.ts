// `mailwarden serve` as a process: live directory changes, SIGHUP reloads
// that keep connections, a bad reload that keeps the running config, SIGTERM.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { YamlDirectory } from '../../src/directory/yaml-backend.ts';
import { DirectoryAdmin } from '../../src/directory/admin.ts';
import { SocketmapClient } from '../support/socketmap-client.ts';
import { startDaemon } from '../support/daemon.ts';

function config(dir: string, extra = ''): string {
  return `directory:\n  backend: yaml\n  path: directory.yaml\nlog:\n  level: debug\nsocketmap:\n  listen: unix:${dir}/run/socketmap.sock\n  mode: "0600"\n${extra}`;
}

test('serve: live changes, SIGHUP reload without dropping connections, bad reload, SIGTERM', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mw-daemon-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'mailwarden.yaml');
  writeFileSync(file, config(dir));
  const admin = new DirectoryAdmin(YamlDirectory.open(join(dir, 'directory.yaml')));
  await admin.addDomain('example.org');
  await admin.addMailbox('alice@example.org');

  const daemon = await startDaemon(file);
  t.after(() => daemon.stop('SIGKILL'));
  const socket = join(dir, 'run/socketmap.sock');
  assert.equal(statSync(socket).mode & 0o777, 0o600, 'socket mode from config');
  const client = await SocketmapClient.connect({ kind: 'unix', path: socket });
  assert.equal(await client.ask('virtual_mailbox_maps', 'alice+x@example.org'), 'OK example.org/alice/');
  assert.equal(await client.ask('virtual_mailbox_maps', 'bob@example.org'), 'NOTFOUND ');

  // A CLI change is answered on the same connection (within a second on an idle host; the bound allows for a loaded one).
  await admin.addMailbox('bob@example.org');
  const start = Date.now();
  while ((await client.ask('virtual_mailbox_maps', 'bob@example.org')) !== 'OK example.org/bob/') {
    assert.ok(Date.now() - start < 5000, 'visible without a reload');
    await sleep(25);
  }
  const decision = await daemon.waitForLog((l) => l['msg'] === 'lookup' && l['key'] === 'alice+x@example.org');
  assert.equal(decision['rule'], 'mailbox alice@example.org (extension stripped)');

  // SIGHUP with a new recipient_delimiter: applies to the open connection.
  writeFileSync(file, config(dir, 'recipient_delimiter: "-"\n'));
  daemon.child.kill('SIGHUP');
  await daemon.waitForLog((l) => l['msg'] === 'configuration reloaded');
  assert.equal(await client.ask('virtual_mailbox_maps', 'alice-x@example.org'), 'OK example.org/alice/');
  assert.equal(await client.ask('virtual_mailbox_maps', 'alice+x@example.org'), 'NOTFOUND ');

  // A broken config: logged with its position, everything keeps running as before.
  writeFileSync(file, config(dir, 'recipient_delimiter: "-"\nsocketmap_typo: {}\n'));
  daemon.child.kill('SIGHUP');
  const err = await daemon.waitForLog((l) => typeof l['msg'] === 'string' && (l['msg'] as string).startsWith('reload: config invalid'));
  assert.match(String(err['err']), /mailwarden\.yaml:\d+:1: unknown setting socketmap_typo/);
  assert.equal(await client.ask('virtual_mailbox_maps', 'alice-x@example.org'), 'OK example.org/alice/');

  // Moving the socket on reload: the new path answers, the old one is gone.
  writeFileSync(file, config(dir).replace('run/socketmap.sock', 'run2/socketmap.sock'));
  daemon.child.kill('SIGHUP');
  await daemon.waitForLog((l) => l['msg'] === 'configuration reloaded' && daemon.lines.filter((x) => x['msg'] === 'configuration reloaded').length === 2);
  const moved = await SocketmapClient.connect({ kind: 'unix', path: join(dir, 'run2/socketmap.sock') });
  assert.equal(await moved.ask('virtual_mailbox_domains', 'example.org'), 'OK example.org');
  moved.socket.destroy();
  client.socket.destroy();

  assert.equal(await daemon.stop('SIGTERM'), 0);
  assert.ok(!existsSync(join(dir, 'run2/socketmap.sock')), 'socket removed on shutdown');
});

test('serve refuses to start on a bad config with file:line:col, exit 78', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mw-daemon-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'mailwarden.yaml');
  writeFileSync(file, 'directory:\n  backend: yaml\n  path: d.yaml\nsocketmap:\n  listen: inet:0.0.0.0:99999\n');
  await assert.rejects(startDaemon(file), /exited 78: mailwarden: .*mailwarden\.yaml:5:11: socketmap\.listen: invalid port/);
});

test('serve: a reload whose listener cannot start keeps every running listener; a same-socket change reopens it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mw-daemon-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'mailwarden.yaml');
  const write = (socketmap: string, dict: string) => writeFileSync(file, [
    'directory:', '  backend: yaml', '  path: directory.yaml', 'log:', '  level: info',
    'socketmap:', `  listen: unix:${dir}/${socketmap}`, 'dict:', `  listen: unix:${dir}/${dict}`, '',
  ].join('\n'));
  const admin = new DirectoryAdmin(YamlDirectory.open(join(dir, 'directory.yaml')));
  await admin.addDomain('example.org');
  writeFileSync(join(dir, 'not-a-dir'), '');
  write('run/socketmap.sock\n  mode: "0600"', 'run/dict.sock');

  const daemon = await startDaemon(file);
  t.after(() => daemon.stop('SIGKILL'));
  const socketmap = { kind: 'unix', path: join(dir, 'run/socketmap.sock') } as const;
  const open = await SocketmapClient.connect(socketmap);
  const answers = async (c: SocketmapClient) => (await c.ask('virtual_mailbox_domains', 'example.org')) === 'OK example.org';
  const failedReloads = () => daemon.lines.filter((l) => String(l['msg']).startsWith('reload: a service failed to start')).length;

  // The socketmap would move (a new socket next to the old one), the dict cannot listen where it would move to.
  write('run2/socketmap.sock\n  mode: "0600"', 'not-a-dir/dict.sock');
  daemon.child.kill('SIGHUP');
  await daemon.waitForLog(() => failedReloads() === 1);
  assert.ok(await answers(open), 'the open connection is still served');
  const fresh = await SocketmapClient.connect(socketmap);
  assert.ok(await answers(fresh), 'the running socket still accepts');
  fresh.socket.destroy();
  assert.ok(!existsSync(join(dir, 'run2/socketmap.sock')), 'the socket started for the failed reload is gone');
  assert.ok(statSync(join(dir, 'run/dict.sock')).isSocket(), 'the dict socket is still there');

  // Same socket, a user that does not exist: it is closed to be reopened, fails, and is reopened as it was.
  write('run/socketmap.sock\n  mode: "0600"\n  user: no-such-user-mw', 'run/dict.sock');
  daemon.child.kill('SIGHUP');
  await daemon.waitForLog(() => failedReloads() === 2);
  const reopened = await SocketmapClient.connect(socketmap);
  assert.ok(await answers(reopened), 'reopened with the running configuration');
  reopened.socket.destroy();
  assert.equal(statSync(socketmap.path).mode & 0o777, 0o600);

  // Same socket, a new mode: reopened with it.
  write('run/socketmap.sock\n  mode: "0660"', 'run/dict.sock');
  daemon.child.kill('SIGHUP');
  await daemon.waitForLog((l) => l['msg'] === 'configuration reloaded');
  assert.equal(statSync(socketmap.path).mode & 0o777, 0o660);
  const after = await SocketmapClient.connect(socketmap);
  assert.ok(await answers(after));
  after.socket.destroy();
  open.socket.destroy();
  assert.equal(await daemon.stop('SIGTERM'), 0);
});
