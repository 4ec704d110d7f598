/**
 * Parallel drafting (HAT Fig. 5): while a verification is in flight, draft ahead from each candidate for the
 * token after the last draft, one step per branch in turn, each branch on its own snapshot of the drafting
 * caches. A branch is used only when the verification keeps every draft and picks its candidate.
 */
import { Ema } from '../ema.ts';
import type { CacheState, DeviceCaches } from './device-caches.ts';
import type { DraftChain, Drafter } from './drafter.ts';

export interface Branch {
  token: number;
  chain: DraftChain;
  state: CacheState;
}

export class Predrafter {
  /**
   * How often, when a round kept every draft, the verification's next token was among the candidates
   * (measured on every such round; prior 0.5).
   */
  private readonly candidateHit = new Ema(0.8, 0.5);

  constructor(private readonly drafter: Drafter) {}

  /**
   * A branch saves about as many draft steps as this chain took, and always costs about half a step (the one in
   * progress when the result arrives): predraft only when the expected saving is larger.
   */
  worthIt(chain: DraftChain): boolean {
    return chain.survival * this.candidateHit.valueOr(0.5) * chain.stepMs.length > 0.5;
  }

  /** After a round that kept every draft: was the verified next token one of the candidates? */
  observe(candidates: readonly number[], next: number): void {
    this.candidateHit.update(candidates.includes(next) ? 1 : 0);
  }

  /** Drafts ahead until `verification` settles; a branch the policy has not finished resumes next round if kept. */
  async run(candidates: readonly number[], verification: Promise<unknown>, caches: DeviceCaches): Promise<Branch[]> {
    let arrived = false;
    verification.then(
      () => {
        arrived = true;
      },
      () => {
        arrived = true;
      },
    );
    const root = caches.snapshot();
    const branches: Branch[] = [];
    for (const token of candidates) {
      if (arrived && branches.length > 0) break;
      caches.restore(root);
      const chain = await this.drafter.start(token);
      branches.push({ token, chain, state: caches.snapshot() });
    }
    while (!arrived && branches.some((b) => !b.chain.finished)) {
      for (const branch of branches) {
        if (arrived) break;
        if (branch.chain.finished) continue;
        caches.restore(branch.state);
        await this.drafter.extend(branch.chain);
        branch.state = caches.snapshot();
      }
    }
    return branches;
  }
}
