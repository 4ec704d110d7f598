/**
 * serve-cloud's plain HTTP answers beside the WebSocket endpoint: liveness, readiness (what a load balancer's health
 * check reads; Triton's /v2/health paths answer too) and Prometheus /metrics. Reads the server's state, changes none.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { MiddleExecutor } from './executor.ts';
import type { CloudMetrics } from './cloud-metrics.ts';

export interface ServerState {
  sessions: number;
  maxSessions: number;
  draining: boolean;
  executor: Pick<MiddleExecutor, 'pending' | 'ready' | 'latencyModel'>;
  /** Omitted: no /metrics. */
  metrics?: CloudMetrics;
}

export function answerHttp(req: IncomingMessage, res: ServerResponse, state: ServerState): void {
  const reply = (status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  const path = (req.url ?? '/').split('?')[0];
  const { executor, metrics } = state;
  if (path === '/health' || path === '/v2/health/live') {
    reply(200, { status: 'live', sessions: state.sessions, pending: executor.pending });
  } else if (path === '/ready' || path === '/v2/health/ready') {
    const ready = !state.draining && executor.ready && state.sessions < state.maxSessions;
    reply(ready ? 200 : 503, {
      ready,
      draining: state.draining,
      sessions: state.sessions,
      maxSessions: state.maxSessions,
      latencyModel: executor.latencyModel(),
    });
  } else if (path === '/metrics' && metrics) {
    metrics.render().then(
      (text) => {
        res.writeHead(200, { 'content-type': metrics.contentType });
        res.end(text);
      },
      (error: unknown) => reply(500, { error: String(error) }),
    );
  } else {
    const endpoints = ['/health', '/ready', ...(metrics ? ['/metrics'] : []), 'ws://…/ (hat protocol v1)'];
    reply(404, { error: 'not found', endpoints });
  }
}
