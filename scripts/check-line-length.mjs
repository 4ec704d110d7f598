// The line-length half of `npm run check:format`: fails on any line of src/, test/ or scripts/ (*.ts, *.mjs, the
// files Prettier checks; test/fixtures/ is generated) longer than .prettierrc.json's printWidth, in characters.
// Prettier keeps code within that width but never breaks a string literal or a comment, so those need this check.
// A script, not a maintained tool: ESLint's max-len would need ESLint, a TypeScript parser and a style plugin (about
// a hundred packages parsing every file) to count characters per line; Biome has no such rule; editorconfig-checker's
// npm package downloads its Go binary from GitHub when run, which this project's machines cannot reach.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const max = JSON.parse(readFileSync('.prettierrc.json', 'utf8')).printWidth;
const long = [];
for (const dir of ['src', 'test', 'scripts'])
  for (const name of readdirSync(dir, { recursive: true })) {
    const file = join(dir, name);
    if (!/\.(ts|mjs)$/.test(file) || file.startsWith('test/fixtures/') || file.includes('node_modules')) continue;
    readFileSync(file, 'utf8')
      .split(/\r?\n/)
      .forEach((line, i) => [...line].length > max && long.push(`${file}:${i + 1}: ${[...line].length} characters`));
  }
if (long.length) {
  console.error(`${long.join('\n')}\n${long.length} line(s) over ${max} characters: split the string or the comment`);
  process.exit(1);
}
