/**
 * Core code never prints: it talks to a Reporter. The CLI gives it a terminal reporter (ora spinners on a TTY,
 * plain lines otherwise, everything on stderr so stdout stays clean for text and --json); tests give it a silent one.
 */
import ora, { type Ora } from 'ora';

export interface Progress {
  /** Updates the line; `fraction` in [0, 1] adds a percentage and an ETA. */
  update(text: string, fraction?: number): void;
  succeed(text?: string): void;
  fail(text?: string): void;
}

export interface Reporter {
  info(message: string): void;
  warn(message: string): void;
  progress(text: string): Progress;
}

const noProgress: Progress = { update() {}, succeed() {}, fail() {} };

export const silentReporter: Reporter = {
  info() {},
  warn() {},
  progress: () => noProgress,
};

function formatEta(startedAt: number, fraction: number): string {
  if (fraction <= 0 || fraction >= 1) return '';
  const elapsed = (Date.now() - startedAt) / 1000;
  const remaining = (elapsed / fraction) * (1 - fraction);
  return remaining < 60 ? ` ETA ${remaining.toFixed(0)}s` : ` ETA ${(remaining / 60).toFixed(1)}min`;
}

export function terminalReporter(options: { quiet?: boolean } = {}): Reporter {
  const interactive = Boolean(process.stderr.isTTY) && !process.env.CI;
  return {
    info(message) {
      if (!options.quiet) process.stderr.write(`${message}\n`);
    },
    warn(message) {
      process.stderr.write(`warning: ${message}\n`);
    },
    progress(text) {
      if (options.quiet) return noProgress;
      const startedAt = Date.now();
      const label = (t: string, fraction?: number) =>
        fraction === undefined ? t : `${t} ${(fraction * 100).toFixed(0)}%${formatEta(startedAt, fraction)}`;
      if (!interactive) {
        process.stderr.write(`${text}...\n`);
        let lastPrinted = 0;
        return {
          update(t, fraction) {
            // Non-interactive logs get a line at most every 5 s, so CI output stays readable.
            if (Date.now() - lastPrinted < 5000) return;
            lastPrinted = Date.now();
            process.stderr.write(`  ${label(t, fraction)}\n`);
          },
          succeed(t) {
            process.stderr.write(`✔ ${t ?? text}\n`);
          },
          fail(t) {
            process.stderr.write(`✖ ${t ?? text}\n`);
          },
        };
      }
      const spinner: Ora = ora({ text, stream: process.stderr }).start();
      return {
        update(t, fraction) {
          spinner.text = label(t, fraction);
        },
        succeed(t) {
          spinner.succeed(t ?? text);
        },
        fail(t) {
          spinner.fail(t ?? text);
        },
      };
    },
  };
}
