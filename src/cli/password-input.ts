// Reading a new password without it ever touching argv, the environment or the screen.
import { CliError, EXIT } from './context.ts';

export async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** --password-stdin: the first line of stdin, without its line ending (like `docker login --password-stdin`). */
export async function passwordFromStdin(): Promise<string> {
  const text = await readStdin();
  const password = text.split(/\r?\n/)[0] ?? '';
  if (password === '') throw new CliError('empty password on stdin', EXIT.dataErr);
  return password;
}

/** Hidden prompt on the terminal, asked twice. */
export async function promptNewPassword(): Promise<string> {
  if (!process.stdin.isTTY) {
    throw new CliError('no terminal to ask for a password: use --password-stdin (or --no-password)', EXIT.usage);
  }
  const first = await promptHidden('New password: ');
  if (first === '') throw new CliError('empty password', EXIT.dataErr);
  const second = await promptHidden('Retype new password: ');
  if (first !== second) throw new CliError('passwords do not match', EXIT.dataErr);
  return first;
}

function promptHidden(prompt: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const stdin = process.stdin;
    process.stderr.write(prompt);
    stdin.setRawMode(true);
    stdin.resume();
    let value = '';
    const done = (err?: Error) => {
      stdin.setRawMode(false);
      stdin.pause();
      stdin.off('data', onData);
      process.stderr.write('\n');
      if (err) reject(err);
      else resolve(value);
    };
    const onData = (data: Buffer) => {
      for (const ch of data.toString('utf8')) {
        if (ch === '\r' || ch === '\n') return done();
        if (ch === '\u0003') return done(new CliError('interrupted', 130));
        if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1);
        else if (ch >= ' ') value += ch;
      }
    };
    stdin.on('data', onData);
  });
}
