// Clients of outside services (issue #20 item 5): the OpenAI-compatible client against a local
// server that rate-limits, fails for a while or fails for good; the CLI flags that steer it; and
// rediss:// for the cluster runner.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import yargs from 'yargs';
import { OpenAIGenerator, retryAfterMs } from '../lib/pipeline/openai-generate.js';
import { backendFlagOptions, withBackendFlags } from '../lib/stages/backend-flags.js';
import { redisConnection } from '../lib/scale/cluster.js';

type Reply = (req: IncomingMessage, res: ServerResponse) => void;

/** A server on 127.0.0.1 answering the n-th request (0-based) with replies[min(n, last)]. */
async function serve(replies: Reply[]): Promise<{ url: string; requests: IncomingMessage[]; close: () => Promise<void> }> {
  const requests: IncomingMessage[] = [];
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const n = requests.push(req) - 1;
      replies[Math.min(n, replies.length - 1)](req, res);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/v1/completions`, requests, close: () => new Promise((r) => server.close(() => r())) };
}

const ok: Reply = (_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ choices: [{ text: 'Paris' }] }));
};
const status = (code: number, headers: Record<string, string> = {}): Reply => (_req, res) => {
  res.writeHead(code, headers);
  res.end(`status ${code}`);
};
const prompt = [{ raw: 'q', wrapped: 'q' }];
// A backoff no test could sit out: where one of these finishes, the wait came from Retry-After.
const HOUR = 3_600_000;

test('429 with Retry-After (seconds) is retried after the wait the server asks, not the backoff', { timeout: 30_000 }, async () => {
  const s = await serve([status(429, { 'retry-after': '0' }), ok]);
  try {
    const g = new OpenAIGenerator({ url: s.url, model: 'm', backoffMs: HOUR, maxDelayMs: HOUR });
    assert.deepEqual(await g.generate(prompt, { maxNewTokens: 4 }), ['Paris']);
    assert.equal(s.requests.length, 2);
  } finally {
    await s.close();
  }
});

test('429 with Retry-After as an HTTP date is retried', { timeout: 30_000 }, async () => {
  const s = await serve([status(429, { 'retry-after': new Date(Date.now() - 5000).toUTCString() }), ok]);
  try {
    const g = new OpenAIGenerator({ url: s.url, model: 'm', backoffMs: HOUR, maxDelayMs: HOUR });
    assert.deepEqual(await g.generate(prompt, { maxNewTokens: 4 }), ['Paris']);
    assert.equal(s.requests.length, 2);
  } finally {
    await s.close();
  }
});

test('retryAfterMs reads delay-seconds and HTTP dates, and nothing else', () => {
  const now = Date.parse('Wed, 21 Oct 2026 07:28:00 GMT');
  assert.equal(retryAfterMs('3', now), 3000);
  assert.equal(retryAfterMs(' 0 ', now), 0);
  assert.equal(retryAfterMs('Wed, 21 Oct 2026 07:28:07 GMT', now), 7000);
  assert.equal(retryAfterMs('Wed, 21 Oct 2026 07:27:00 GMT', now), 0); // already past
  assert.equal(retryAfterMs('soon', now), undefined);
  assert.equal(retryAfterMs('-1', now), undefined);
  assert.equal(retryAfterMs(null, now), undefined);
});

test('503 twice then 200: backed off and answered', async () => {
  const s = await serve([status(503), status(503), ok]);
  try {
    const g = new OpenAIGenerator({ url: s.url, model: 'm', backoffMs: 1 });
    assert.deepEqual(await g.generate(prompt, { maxNewTokens: 4 }), ['Paris']);
    assert.equal(s.requests.length, 3);
  } finally {
    await s.close();
  }
});

test('a permanent 500 fails after the retries with E_IO / HTTP_500', async () => {
  const s = await serve([status(500)]);
  try {
    const g = new OpenAIGenerator({ url: s.url, model: 'm', backoffMs: 1, retries: 2 });
    await assert.rejects(g.generate(prompt, { maxNewTokens: 4 }), (err: Error & { code?: string; errno?: string }) => {
      assert.equal(err.code, 'E_IO');
      assert.equal(err.errno, 'HTTP_500');
      assert.match(err.message, /HTTP 500.*gave up after 3 attempts; --retries 2/);
      return true;
    });
    assert.equal(s.requests.length, 3);
  } finally {
    await s.close();
  }
});

test('the default is 3 retries; a 400 is not retried', async () => {
  const s = await serve([status(500)]);
  try {
    await assert.rejects(new OpenAIGenerator({ url: s.url, model: 'm', backoffMs: 1 }).generate(prompt, { maxNewTokens: 4 }), { code: 'E_IO' });
    assert.equal(s.requests.length, 4);
  } finally {
    await s.close();
  }
  const bad = await serve([status(400), ok]);
  try {
    await assert.rejects(new OpenAIGenerator({ url: bad.url, model: 'm', backoffMs: 1 }).generate(prompt, { maxNewTokens: 4 }), { code: 'E_IO', errno: 'HTTP_400' });
    assert.equal(bad.requests.length, 1);
  } finally {
    await bad.close();
  }
});

test('the API key comes from the variable --api-key-env names (default OPENAI_API_KEY) and stays out of errors', async () => {
  const saved = { OPENAI_API_KEY: process.env.OPENAI_API_KEY, GAINRAG_TEST_KEY: process.env.GAINRAG_TEST_KEY };
  const s = await serve([ok, ok, status(401)]);
  try {
    process.env.OPENAI_API_KEY = 'sk-default-123';
    process.env.GAINRAG_TEST_KEY = 'sk-named-456';
    await new OpenAIGenerator({ url: s.url, model: 'm' }).generate(prompt, { maxNewTokens: 4 });
    await new OpenAIGenerator({ url: s.url, model: 'm', apiKeyEnv: 'GAINRAG_TEST_KEY' }).generate(prompt, { maxNewTokens: 4 });
    assert.equal(s.requests[0].headers.authorization, 'Bearer sk-default-123');
    assert.equal(s.requests[1].headers.authorization, 'Bearer sk-named-456');
    await assert.rejects(new OpenAIGenerator({ url: s.url, model: 'm', apiKeyEnv: 'GAINRAG_TEST_KEY' }).generate(prompt, { maxNewTokens: 4 }), (err: Error) => {
      assert.match(err.message, /HTTP 401.*--api-key-env/);
      assert.doesNotMatch(err.message, /sk-named-456/);
      return true;
    });
    delete process.env.GAINRAG_TEST_KEY;
    assert.throws(() => new OpenAIGenerator({ url: s.url, apiKeyEnv: 'GAINRAG_TEST_KEY' }), { code: 'E_INVALID_ARG', message: /GAINRAG_TEST_KEY.*not set/ });
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    await s.close();
  }
});

test('--retries and --api-key-env map onto the client options', async () => {
  const parse = async (args: string[]) => backendFlagOptions(await withBackendFlags(yargs(args)).parseAsync());
  assert.deepEqual(await parse([]), { retries: 3, doubleBos: false });
  assert.deepEqual(await parse(['--retries', '0', '--api-key-env', 'VLLM_KEY']), { retries: 0, apiKeyEnv: 'VLLM_KEY', doubleBos: false });
  await assert.rejects(parse(['--retries', '-1']), RangeError);
  await assert.rejects(parse(['--retries', '1.5']), RangeError);
});

test('rediss:// connects over TLS; redis:// does not', () => {
  const tls = redisConnection('rediss://user:p%40ss@cache.example.com:6380/2') as Record<string, unknown>;
  assert.deepEqual(tls.tls, {});
  assert.equal(tls.host, 'cache.example.com');
  assert.equal(tls.port, 6380);
  assert.equal(tls.db, 2);
  assert.equal(tls.password, 'p@ss');
  assert.equal((redisConnection('redis://127.0.0.1:6379') as Record<string, unknown>).tls, undefined);
  assert.throws(() => redisConnection('http://127.0.0.1:6379'), { code: 'E_INVALID_ARG' });
});
