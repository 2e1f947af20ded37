# The paged-attention cell crashes on an import (a kernel library that is not installed), so paged_attention is
# never defined: test_paged_attention fails (3 points); nothing else uses it. 21 - 3 = 18 points.
# %% answer id=kv_cache
@torch.no_grad()
def forward_cached(model, ids, cache):
    offset = len(cache)
    x = lab.embed(model, ids)
    positions = torch.arange(offset, offset + ids.size(1))
    for li in range(lab.num_layers(model)):
        q, k, v = lab.layer_qkv(model, li, x, positions)
        cache.k[li] = k if offset == 0 else torch.cat([cache.k[li], k], dim=2)
        cache.v[li] = v if offset == 0 else torch.cat([cache.v[li], v], dim=2)
        x = lab.layer_out(model, li, x, lab.attend(q, cache.k[li], cache.v[li]))
    return lab.logits(model, x)


@torch.no_grad()
def greedy_generate(model, prompt_ids, max_new_tokens):
    cache = KVCache(lab.num_layers(model))
    out = torch.zeros(prompt_ids.shape[0], 0, dtype=torch.long)
    step = prompt_ids
    for _ in range(max_new_tokens):
        step = forward_cached(model, step, cache)[:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, step], 1)
    return out

# %% answer id=paged_blocks
def block_hashes(tokens, block_size):
    import hashlib

    out, digest = [], b""
    for j in range(len(tokens) // block_size):
        digest = hashlib.md5(digest + bytes(str(list(tokens[j * block_size:(j + 1) * block_size])), "ascii")).digest()
        out.append(digest)
    return out


class BlockManager:
    def __init__(self, num_blocks, block_size):
        self.bs, self.ref_count, self.tables = block_size, [0] * num_blocks, {}
        self.count, self.lookup, self.rev = {}, {}, {}

    def num_free(self):
        return sum(1 for r in self.ref_count if r == 0)

    def _take(self):
        try:
            b = self.ref_count.index(0)
        except ValueError:
            raise MemoryError("KV pool exhausted") from None
        self.ref_count[b] = 1
        return b

    def _put(self, b):
        self.ref_count[b] -= 1
        if self.ref_count[b] == 0 and b in self.rev:
            del self.lookup[self.rev.pop(b)]

    def add_sequence(self, seq_id, tokens):
        hs = block_hashes(tokens, self.bs)
        k = 0
        while k < len(hs) and hs[k] in self.lookup:
            k += 1
        table = [self.lookup[h] for h in hs[:k]]
        for b in table:
            self.ref_count[b] += 1
        for h in hs[k:]:
            b = self._take()
            self.lookup[h], self.rev[b] = b, h
            table.append(b)
        if len(tokens) % self.bs:
            table.append(self._take())
        self.tables[seq_id], self.count[seq_id] = table, len(tokens)
        return k * self.bs

    def fork(self, parent_id, child_id):
        self.tables[child_id] = self.tables[parent_id][:]
        self.count[child_id] = self.count[parent_id]
        for b in self.tables[child_id]:
            self.ref_count[b] += 1

    def append_token(self, seq_id, token):
        t, n = self.tables[seq_id], self.count[seq_id]
        self.count[seq_id] = n + 1
        if n % self.bs == 0:
            t.append(self._take())
            return t[-1], 0, None
        if self.ref_count[t[-1]] == 1:
            return t[-1], n % self.bs, None
        src, t[-1] = t[-1], self._take()
        self._put(src)
        return t[-1], n % self.bs, (src, t[-1])

    def free(self, seq_id):
        for b in self.tables.pop(seq_id):
            self._put(b)
        self.count.pop(seq_id)

# %% answer id=paged_attention
from flash_attn import flash_attn_with_kvcache  # noqa: F401  (not installed here)


def paged_attention(q, k_pool, v_pool, block_tables, seq_lens):
    return flash_attn_with_kvcache(q, k_pool, v_pool, block_table=block_tables, cache_seqlens=seq_lens)

# %% answer id=kv_waste
def kv_waste(lengths, block_size, max_len):
    a = np.array(lengths, dtype=float)
    paged = block_size * np.ceil(a / block_size)
    return (max_len - a).sum() / (max_len * a.size), (paged - a).sum() / paged.sum()

# %% answer id=batching
def static_batching(requests, max_batch, step_time):
    finish, now, k = [0.0] * len(requests), 0.0, 0
    while k < len(requests):
        now = max(now, requests[k][0])
        group = [j for j in range(k, min(k + max_batch, len(requests))) if requests[j][0] <= now]
        k += len(group)
        for s in range(max(requests[j][2] for j in group)):
            now += step_time(0, sum(requests[j][1] for j in group)) if s == 0 else step_time(len(group), 0)
            for j in group:
                if requests[j][2] == s + 1:
                    finish[j] = now
    return finish


def continuous_batching(requests, max_batch, step_time):
    finish, now, k = [0.0] * len(requests), 0.0, 0
    running = {}
    while k < len(requests) or running:
        if not running and requests[k][0] > now:
            now = requests[k][0]
        joining = []
        while k < len(requests) and requests[k][0] <= now and len(running) + len(joining) < max_batch:
            joining.append(k)
            k += 1
        now += step_time(len(running), sum(requests[j][1] for j in joining))
        running.update({j: 0 for j in joining})
        for j in list(running):
            running[j] += 1
            if running[j] == requests[j][2]:
                finish[j] = now
                del running[j]
    return finish

# %% answer id=speculative
def speculative_step(p, q, draft, u, sample):
    out = []
    for i, x in enumerate(map(int, draft)):
        if u[i] >= min(1.0, float(p[i, x] / q[i, x])):
            res = torch.clamp(p[i] - q[i], min=0)
            return out + [int(sample(res / res.sum()))]
        out.append(x)
    return out + [int(sample(p[len(out)]))]


def expected_acceptance(p, q):
    m = torch.where(p < q, p, q)
    return float(m.sum())
