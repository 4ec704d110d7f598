/** Structured logs for the server: one JSON object per line on stderr (or wherever the sink writes). */
export interface Logger {
  log(event: string, fields?: Record<string, unknown>): void;
}

export const silentLogger: Logger = { log() {} };

export function jsonLineLogger(write: (line: string) => void = (line) => process.stderr.write(line)): Logger {
  return {
    log(event, fields = {}) {
      write(`${JSON.stringify({ time: new Date().toISOString(), event, ...fields })}\n`);
    },
  };
}
