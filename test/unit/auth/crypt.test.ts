// crypt(3) against the spec's published vectors, hashes from libxcrypt (Debian's crypt)
// and from Dovecot's `doveadm pw`, fixed and generated live.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { crypt, cryptAsync, md5Crypt, sha256Crypt, sha512Crypt } from '../../../src/auth/crypt.ts';

const run = promisify(execFile);

// Ulrich Drepper, "Unix crypt using SHA-256 and SHA-512", test vectors: [setting, password, expected].
const DREPPER_SHA256: [string, string, string][] = [
  ['$5$saltstring', 'Hello world!', '$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5'],
  ['$5$rounds=10000$saltstringsaltstring', 'Hello world!', '$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA'],
  ['$5$rounds=5000$toolongsaltstring', 'This is just a test', '$5$rounds=5000$toolongsaltstrin$Un/5jzAHMgOGZ5.mWJpuVolil07guHPvOW8mGRcvxa5'],
  ['$5$rounds=1400$anotherlongsaltstring', 'a very much longer text to encrypt.  This one even stretches over morethan one line.',
    '$5$rounds=1400$anotherlongsalts$Rx.j8H.h8HjEDGomFU8bDkXm3XIUnzyxf12oP84Bnq1'],
  ['$5$rounds=77777$short', 'we have a short salt string but not a short password', '$5$rounds=77777$short$JiO1O3ZpDAxGJeaDIuqCoEFysAe1mZNJRs3pw0KQRd/'],
  ['$5$rounds=123456$asaltof16chars..', 'a short string', '$5$rounds=123456$asaltof16chars..$gP3VQ/6X7UUEW3HkBn2w1/Ptq2jxPyzV/cZKmF/wJvD'],
  ['$5$rounds=10$roundstoolow', 'the minimum number is still observed', '$5$rounds=1000$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC'],
];
const DREPPER_SHA512: [string, string, string][] = [
  ['$6$saltstring', 'Hello world!', '$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1'],
  ['$6$rounds=10000$saltstringsaltstring', 'Hello world!',
    '$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.'],
  ['$6$rounds=5000$toolongsaltstring', 'This is just a test',
    '$6$rounds=5000$toolongsaltstrin$lQ8jolhgVRVhY4b5pZKaysCLi0QBxGoNeKQzQ3glMhwllF7oGDZxUhx1yxdYcz/e1JSbq3y6JMxxl8audkUEm0'],
  ['$6$rounds=1400$anotherlongsaltstring', 'a very much longer text to encrypt.  This one even stretches over morethan one line.',
    '$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1'],
  ['$6$rounds=77777$short', 'we have a short salt string but not a short password',
    '$6$rounds=77777$short$WuQyW2YR.hBNpjjRhpYD/ifIw05xdfeEyQoMxIXbkvr0gge1a1x3yRULJ5CCaUeOxFmtlcGZelFl5CxtgfiAc0'],
  ['$6$rounds=123456$asaltof16chars..', 'a short string',
    '$6$rounds=123456$asaltof16chars..$BtCwjqMJGx5hrJhZywWvt0RLE8uZ4oPwcelCjmw2kSYu.Ec6ycULevoBK25fs2xXgMNrCzIMVcgEJAstJeonj1'],
  ['$6$rounds=10$roundstoolow', 'the minimum number is still observed',
    '$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX.'],
];

// Generated with libxcrypt 4.4 (Debian 12's crypt(3)): password lengths around every
// digest block size (16/32/64), salts of 0..max characters, default and explicit rounds.
const LIBXCRYPT: [string, string][] = [
  ["", "$1$hM47a$RdALTwfxwqST06hnv3ErP/"],
  ["", "$5$5p29RP6s9Q5$wwYmqFPigHeN7C1TxeX5WMGmdBJTM2a/5NgHN0UvsB0"],
  ["", "$6$rounds=1000$q5M$dJQvqhXedPQoNkv4vgL5hB/ki5wXSB46YPJtDe.lhs7Hx2yvYamE05yglqwP0.NG7FdMag9vVYW2ivY6g4X0Q."],
  ["f", "$1$fzPgdBlb$UHP5f.P8.ZxesEOq5MsAz0"],
  ["f", "$5$Ja65oZ$3dxN.cK4GsxaNrQHZ/lHAs7uYw0hNsHSaji1eZ5PqB8"],
  ["f", "$6$rounds=1000$CVUIAtlt8AZFT$27mnDg1Q4ozhKq/Fhjd7AXhhK1UwD799u.Qg5tggA3LhxL9AH3fN04OEscJV3e8tL6DSHyJAv.0owwYM0BFgP/"],
  ["p%1vRt ", "$1$37CFGZ$MZYpMeWonXinySi7Mfe/N."],
  ["p%1vRt ", "$5$rounds=1000$69wW65BTyLG0VH$ISeuDZfi28lYvxrvTDhYJhf5c9YLpwk77cr0QuHr888"],
  ["p%1vRt ", "$6$5pyetMMZ8jTNxfR$YnpTEAVatZ2W3aqIdKvDE0bHl4aCwKn1fWHUyP46EckTFeygchyC6v1oH1TapdSNQHrAg2jVBucLy9Yb2nA140"],
  ["J1TWDtkw", "$1$rr$7YEhlun/jylbhI/q0Gn.t0"],
  ["J1TWDtkw", "$5$$hQN5xbkeurrZyU5hEpjl1g.7SZrthW5wFMxtPbLc6/8"],
  ["J1TWDtkw", "$6$vy.gP$nCXSybqmzzncaEDSAtz7I723imryHnd4W8AZ6DpuxbVw9wditXtsi9PBBAOdRADreBg2NmOIURyH98xUlIBf0."],
  ["Oq%g6YYZYn9Zhyi", "$1$Sic$wQmuimpl2D.bOKJpKgde7/"],
  ["Oq%g6YYZYn9Zhyi", "$5$rounds=1234$4b.haI17oK$ZRsCJe61k19ofd.PI2L5kKerO1.zVVO7XoXHwHcuOzA"],
  ["Oq%g6YYZYn9Zhyi", "$6$rounds=1234$IWdcYVXXB8g$FrCONLC/8I37aCR3OnrrG9PYxikjTNoJ6Ed/NcsWfNDBsEA9XxFWuypD6UJ6cKczQdWkvvCcNg1VuQWHrUv1S1"],
  ["H9u&cAUsdMlH&UvT", "$1$Eqm$MfzQi/7lY0M0U/RyKpkNu1"],
  ["H9u&cAUsdMlH&UvT", "$5$NrnZH11$GK6kgo6BqN9bsgnrHZxbCF4Fv93fj6oTNANA5yfuXj9"],
  ["H9u&cAUsdMlH&UvT", "$6$vmGTGI8qbrWnFoX$yf.pXfzHjYS0kjSGR9xM8FSFSfqBYU3NBZ8rhusLM52BbosR5zoF3z6W2SpaYOTu2isic6HrJMJCzApUzMK7g."],
  ["a9SkpXz9w3QlY7Zku", "$1$e1$8qNQKXnxc9hrCMDSbWarf."],
  ["a9SkpXz9w3QlY7Zku", "$5$rounds=7777$VgWG$74Q7kcFUU5PVee6njpDgDiaeQItgwcASSdHJwqZa3B4"],
  ["a9SkpXz9w3QlY7Zku", "$6$0/bf$iF0lqusTh62zR0WIWy2ekJgJ/7SC.CF1uOsnhTmFdRH7zd3uwnb9bAA6WnKl4ZaMoME7fPoIp8BLb1H9IaftP0"],
  ["yBdGBL#EPH1qhT6&1#qt%c4xatws8ph", "$1$Xb5tm$o2mNx1aVAkbNND.RtF9cW/"],
  ["yBdGBL#EPH1qhT6&1#qt%c4xatws8ph", "$5$3aT16SDn$8buYQJbCouyvnOzlcIss9.vObi9Loj9e4jUIqJHTNYD"],
  ["yBdGBL#EPH1qhT6&1#qt%c4xatws8ph", "$6$rounds=7777$XtvnTfPdMSC7sQ$i/TxsUKwY/yVMIBFymvrfPxShelLCmr2IDkGK6.FsgyY9QcjDRJKeMz0l.W81Gu/6fQFqG3TA8oHGcM1v.tjW1"],
  ["MptUsGr7CmY uCu3%ZR1zTOlUcR64cXQ", "$1$z6crb8vw$ghSGHOMYLwc2dEIvMsq7I1"],
  ["MptUsGr7CmY uCu3%ZR1zTOlUcR64cXQ", "$5$rounds=1000$l$eplRqTxmCXm8queA./aOz5a26gEr2P/1PeXOrwWGQ90"],
  ["MptUsGr7CmY uCu3%ZR1zTOlUcR64cXQ", "$6$vNhZD9x5lQ7w0$//D/qmVfkOd2gpqwwGghmvJCtoxsKc0jlRG6zKP1MVu4E5tfnWLCZhZmtRIxDW1VLxCKfT3WGAOU5yv4Hdtwi1"],
  ["HkCiHp6bR1IqfEouHgxzNNAL5#wIScGeb", "$1$$7aFDWiF3ETWv09Rtl0B36/"],
  ["HkCiHp6bR1IqfEouHgxzNNAL5#wIScGeb", "$5$mWtTbRZMBprFnfNG$ga.BC3RdU5gnSDc7LhB.KkTi9n6eX7EW6FIOqreenP8"],
  ["HkCiHp6bR1IqfEouHgxzNNAL5#wIScGeb", "$6$rounds=1000$/7uR$knImc/Qq/0gOk9j/G0Su.UA2rCy1NuocATftZGcOABeAZ2ywuI3dFVN3KkaqSWYsVEV8aoraFzDMEdwV1qZAo/"],
  ["W#KFLf6xuI5aHUQPFeNBTxaQWk8J#zF#alHlsZfYcMMDktXP!tKsf%2#r#cDkdf", "$1$Ib$dBR9VWoLpMBBTRRKgVu9o0"],
  ["W#KFLf6xuI5aHUQPFeNBTxaQWk8J#zF#alHlsZfYcMMDktXP!tKsf%2#r#cDkdf", "$5$rounds=1000$T40tYv.U696W$v7Jkh0O3GYGjQGmyAIGvHMmgjhPXNyz2izBZy/xO0eA"],
  ["W#KFLf6xuI5aHUQPFeNBTxaQWk8J#zF#alHlsZfYcMMDktXP!tKsf%2#r#cDkdf", "$6$sorUZK7X$HLn7vIuSyz7DLu9AR1XV9YCF7OKio6utaNpKnMNThbUdsIbhqS/QHWy9rCkgqmoBAXv7uQzGokj0RuvzRrmkt1"],
  ["KfzjsQGMrb9h ImB L&K777pzNk8cL6j#5IXAAjlsHUq%JoUD! Ydua 5ZMs1SWO", "$1$E$7rOmlFH0CBxfqG6ZWDJlk0"],
  ["KfzjsQGMrb9h ImB L&K777pzNk8cL6j#5IXAAjlsHUq%JoUD! Ydua 5ZMs1SWO", "$5$$/DpvBezeeinm5a879iW0/Df5kHTkWLyI5.tPZfYwmk2"],
  ["KfzjsQGMrb9h ImB L&K777pzNk8cL6j#5IXAAjlsHUq%JoUD! Ydua 5ZMs1SWO", "$6$Mdn/zuJ6ML$AkxmCdyto.WqnTmvYu6oEkaQACUoJsTF3B3PP4uOlD7czpkcqLCnp7sl7oTQpmTCuguyBFwEy21JBOvVIzRZ81"],
  ["jU2JgJngKtFI3%OyV2dZAkg05rK gqv81RKMGHZEM9YpvujA#!C5Q52ryFlwRlOEV", "$1$n0OL$4OorQ1VuADh2JB5hjQPGx0"],
  ["jU2JgJngKtFI3%OyV2dZAkg05rK gqv81RKMGHZEM9YpvujA#!C5Q52ryFlwRlOEV", "$5$oKwF5ZxIep9wt$MDL/cditAQ4yddMC9ZWzpoo/pX/V7xy5.pgujSNjZu6"],
  ["jU2JgJngKtFI3%OyV2dZAkg05rK gqv81RKMGHZEM9YpvujA#!C5Q52ryFlwRlOEV", "$6$RB0e2QWY.7MVTt$fXuKp.tj7yyy4dMFSiYrvLO90bSFZe2E3.1z59dFSldfGYrHfYd3uzjggmjy3owN9afmPXIV3deW7IZzfo5KJ0"],
  ["Ctt&n6kfaqDeMqG3omjMyXHCabM6JOF8EFd0Nhcy!1kGD2VD!eR1UYzaL#iA!zNyD7CHLn!xC 1hsYgBds1ghxY5OokvQyx7eNWVQ4vnakJkS1pAWTN3lg8zV5yPU8d0F", "$1$3K2V65$c1126PNCRcHr19u7iosB6."],
  ["Ctt&n6kfaqDeMqG3omjMyXHCabM6JOF8EFd0Nhcy!1kGD2VD!eR1UYzaL#iA!zNyD7CHLn!xC 1hsYgBds1ghxY5OokvQyx7eNWVQ4vnakJkS1pAWTN3lg8zV5yPU8d0F", "$5$m6FIwE3v$J9j2fvVgsq9QzT7XqZ2mzM..Zs8/cLgtuZJwLtvS00D"],
  ["Ctt&n6kfaqDeMqG3omjMyXHCabM6JOF8EFd0Nhcy!1kGD2VD!eR1UYzaL#iA!zNyD7CHLn!xC 1hsYgBds1ghxY5OokvQyx7eNWVQ4vnakJkS1pAWTN3lg8zV5yPU8d0F", "$6$xA.61rbWVL$e72XBPi0HORFBfVD6okHnL8Jxe7RxKiPV2vgWqMideS3s/jgL/csX1e335XmZ9ENwdcKWM8ClE57rIQiwNGqZ1"],
  ["pässwörd ✓ 日本", "$1$abcdefgh$sODdMM3bkFP6R6eCbkI4A."],
  ["pässwörd ✓ 日本", "$5$0123456789abcdef$EdtniH4xcDP2N.pc922i9apRmL6DmbTe3Xuvruv5F0A"],
  ["pässwörd ✓ 日本", "$6$0123456789abcdef$ynIftJUn38iln.ZZGcpw49Z30cHkkY40Tm94W4Uxmr0u5AHzRIWfaQm2G6/wh7X04rhZHUHZx94hW6ApiILVU/"],
];

// `doveadm pw -s SCHEME [-r ROUNDS] -p 'pässwörd ✓'` from Dovecot 2.3.19.
const DOVEADM_PASSWORD = 'pässwörd ✓';
const DOVEADM: string[] = [
  '$6$w3Q2C/9FXW9uuT2r$ZQjyyTTt79Te6LzDBpWR/mXouMEc7JvBU12VXyoeKQsbg0nrsAHAedu6Xv4diu.FzH2pQ4eCEMYKX.8KcfCYL/',
  '$6$iNPZLezVM0Rf2uKG$OT3QBv27CzTjq.ClJWYdMUcjLaoSIJoOoYRWb5pI6MbOtexLso3.BHSR/Rjk/9UqRmEpAFDTSSudmi63omlFo1',
  '$6$rounds=10000$CwFa4umb6D6Wpqj3$XWzzi5MPMMqFVTQEcoHUvlssyQmeYa6QFhO6PXXHe2dF39FdELz/fzAwecEdcaDXKvdr0JAm.wwpQ0BTacypB0',
  '$5$MN6.BkJ3CkOpqQH3$RSySv0FuhaXUJ6KUTmaoti6uEhC9CQ5PigmvxkHjMl7',
  '$5$rounds=1000$4a9c7EHLXI7xkjO4$3P1WB51NhwzVoqCh/x0BWXoeTgfiSm6DemXdmhjIq5A',
  '$1$4x3b2BRd$OQddsWo6Z6hqr4dOYFRpm0',
];

test('SHA256-CRYPT: the spec vectors, including rounds= and the 16-character salt limit', () => {
  for (const [setting, password, expected] of DREPPER_SHA256) assert.equal(sha256Crypt(password, setting), expected, setting);
});

test('SHA512-CRYPT: the spec vectors, including rounds= and the 16-character salt limit', () => {
  for (const [setting, password, expected] of DREPPER_SHA512) assert.equal(sha512Crypt(password, setting), expected, setting);
});

test('libxcrypt vectors: every password length class, salt length and rounds for $1$, $5$, $6$', () => {
  for (const [password, expected] of LIBXCRYPT) {
    assert.equal(crypt(password, expected), expected, `${JSON.stringify(password)} ${expected}`);
    assert.notEqual(crypt(`${password}x`, expected), expected);
  }
});

test('fixed doveadm vectors (UTF-8 password) and a whole stored hash used as the setting', () => {
  for (const expected of DOVEADM) {
    assert.equal(crypt(DOVEADM_PASSWORD, expected), expected, expected);
    assert.equal(crypt(Buffer.from(DOVEADM_PASSWORD), expected), expected, 'bytes work as well as strings');
    assert.notEqual(crypt('pässwörd ✗', expected), expected);
  }
});

test('live doveadm pw -s for each crypt scheme and random passwords', async () => {
  const cases: [string, string[]][] = [
    ['SHA512-CRYPT', []], ['SHA512-CRYPT', ['-r', '6000']], ['SHA256-CRYPT', []], ['SHA256-CRYPT', ['-r', '1000']], ['MD5-CRYPT', []],
  ];
  await Promise.all(cases.map(async ([scheme, extra]) => {
    const password = randomBytes(1 + (randomBytes(1)[0]! % 80)).toString('base64');
    const { stdout } = await run('doveadm', ['pw', '-s', scheme, ...extra, '-p', password]);
    const stored = stdout.trim().replace(`{${scheme}}`, '');
    assert.equal(crypt(password, stored), stored, `${scheme} ${extra.join(' ')}`);
  }));
});

test('settings: salt truncation, $ ends the salt, no rounds= means default and is not echoed', () => {
  assert.equal(md5Crypt('x', '$1$abcdefghij$'), md5Crypt('x', '$1$abcdefgh'));
  assert.match(md5Crypt('x', '$1$abcdefghij$'), /^\$1\$abcdefgh\$[./0-9A-Za-z]{22}$/);
  assert.equal(sha512Crypt('x', '$6$rounds=5000$ab'), `$6$rounds=5000$${sha512Crypt('x', '$6$ab').slice(3)}`);
  assert.equal(sha256Crypt('x', '$5$'), '$5$$' + sha256Crypt('x', '$5$$zzz').slice(4));
  assert.throws(() => crypt('x', '$2y$05$abc'), TypeError);
  assert.throws(() => crypt('x', 'ab01234567890'), TypeError, 'DES crypt is not implemented');
  assert.throws(() => sha512Crypt('x', '$5$salt'), TypeError);
});

test('long passwords: libxcrypt vectors at its 511-byte maximum', () => {
  const a511 = 'a'.repeat(511);
  assert.equal(crypt(a511, '$6$longpassword'),
    '$6$longpassword$Adx0DlbWdV9UGB1ksK3pvj9BGm/E4JRItwtXmv1hA/4Epf/26ed1vDCFVnoVsGieAq7TjRx1x.07ZvWHrMBAk1');
  assert.equal(crypt(a511, '$1$longpass'), '$1$longpass$gz4El00qeK5E0BOMbzcGN0');
  assert.equal(crypt('a'.repeat(510), '$1$longpass'), '$1$longpass$qCBr5MKxt23eDQDT5bqeN/');
});

test('cryptAsync gives the same strings and keeps the event loop turning on expensive settings', async () => {
  for (const [setting, password, expected] of [...DREPPER_SHA256, ...DREPPER_SHA512].slice(0, 3)) {
    assert.equal(await cryptAsync(password, setting), expected);
  }
  assert.equal(await cryptAsync(DOVEADM_PASSWORD, DOVEADM[5]!), DOVEADM[5]);
  await assert.rejects(cryptAsync('x', '$2y$05$abc'), TypeError);

  // 300000 rounds: hundreds of ms of hashing, during which a 1 ms timer must keep firing.
  // (Judged by the number of ticks, not the longest gap: on a loaded 2-core machine the
  // OS alone can preempt a busy process for tens of ms.)
  let last = performance.now();
  const gaps: number[] = [];
  const timer = setInterval(() => {
    const now = performance.now();
    gaps.push(now - last);
    last = now;
  }, 1);
  const t0 = performance.now();
  const setting = '$6$rounds=300000$slices';
  const result = await cryptAsync('correct horse', setting).finally(() => clearInterval(timer));
  const total = performance.now() - t0;
  const p90 = [...gaps].sort((a, b) => a - b)[Math.floor(gaps.length * 0.9)] ?? total;
  console.log(`cryptAsync ${setting}: ${total.toFixed(0)} ms; timer fired ${gaps.length} times, p90 gap ${p90.toFixed(1)} ms, max ${Math.max(...gaps).toFixed(1)} ms`);
  assert.equal(result, sha512Crypt('correct horse', setting));
  assert.ok(gaps.length >= total / 25, `the timer fired only ${gaps.length} times in ${total.toFixed(0)} ms`);
  assert.ok(p90 < 25, `p90 event-loop gap ${p90.toFixed(1)} ms`);
});

test('timing: one default-rounds SHA512-CRYPT / SHA256-CRYPT / MD5-CRYPT', () => {
  const time = (fn: () => void, n = 20) => {
    fn(); // warm up the JIT
    const t0 = performance.now();
    for (let i = 0; i < n; i++) fn();
    return (performance.now() - t0) / n;
  };
  const sha512 = time(() => sha512Crypt('correct horse', '$6$w3Q2C/9FXW9uuT2r'));
  const sha256 = time(() => sha256Crypt('correct horse', '$5$MN6.BkJ3CkOpqQH3'));
  const md5 = time(() => md5Crypt('correct horse', '$1$4x3b2BRd'));
  console.log(`crypt timings: sha512-crypt ${sha512.toFixed(2)} ms, sha256-crypt ${sha256.toFixed(2)} ms, md5-crypt ${md5.toFixed(2)} ms`);
  assert.ok(sha512 < 100, 'sha512-crypt should take milliseconds, not tens of them');
});
