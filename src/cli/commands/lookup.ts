import type { Command } from 'commander';
import { DirectoryMaps, isMapName, MAP_NAMES, type MapName } from '../../lookup/maps.ts';
import { CliError, EXIT, printJson, type CliContext } from '../context.ts';

export function registerLookup(program: Command, ctx: () => CliContext): void {
  program.command('lookup <map-or-key> [key]')
    .description(`answer a Postfix table query like the daemon does (postmap -q), with the rule that matched; `
      + `with only a key, every map is asked. Maps: ${MAP_NAMES.join(', ')}`)
    .option('--json', 'machine-readable output')
    .action(async (first: string, second: string | undefined, o: { json?: boolean }) => {
      let maps: readonly MapName[];
      let key: string;
      if (second === undefined) {
        maps = MAP_NAMES;
        key = first;
      } else {
        if (!isMapName(first)) throw new CliError(`unknown map ${first} (known: ${MAP_NAMES.join(', ')})`, EXIT.usage);
        maps = [first];
        key = second;
      }
      const c = ctx();
      const resolver = new DirectoryMaps(await c.directory(), { recipientDelimiter: c.config.recipientDelimiter });
      const results = [];
      for (const map of maps) results.push({ map, key, ...(await resolver.lookup(map, key)) });
      if (o.json) printJson(maps.length === 1 ? results[0] : results);
      else {
        for (const r of results) {
          process.stdout.write(r.found ? `${r.map}: ${r.value}\n  (${r.rule})\n` : `${r.map}: not found\n  (${r.rule})\n`);
        }
      }
      // postmap -q: non-zero when nothing was found.
      if (!results.some((r) => r.found)) process.exitCode = EXIT.fail;
    });
}
