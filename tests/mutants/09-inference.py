# Plausible mistakes for 09-inference (see tests/test_mutants.py for the format).

# %% mutant name=cache_position_off_by_one cell=kv_cache fails=test_kv_cache
replace positions = torch.arange(past, past + ids.shape[1]) => positions = torch.arange(past + 1, past + 1 + ids.shape[1])

# %% mutant name=positions_restart_at_zero cell=kv_cache fails=test_kv_cache
replace positions = torch.arange(past, past + ids.shape[1]) => positions = torch.arange(ids.shape[1])

# %% mutant name=cache_not_appended cell=kv_cache fails=test_kv_cache
# the new keys replace the cache instead of extending it
replace <<<
        if cache.k[i] is not None:
            k, v = torch.cat((cache.k[i], k), dim=2), torch.cat((cache.v[i], v), dim=2)
===
>>>

# %% mutant name=fresh_cache_every_step cell=kv_cache fails=test_kv_cache
# a new cache per step: each decoded token sees only itself
replace <<<
    cache = KVCache(lab.num_layers(model))
    step_input, new = prompt_ids, []
    for _ in range(max_new_tokens):
===
    step_input, new = prompt_ids, []
    for _ in range(max_new_tokens):
        cache = KVCache(lab.num_layers(model))
>>>

# %% mutant name=first_token_of_the_prefill cell=kv_cache fails=test_kv_cache
# the next token taken from the logits of the prompt's first position, not its last
replace step_input = forward_cached(model, step_input, cache)[:, -1].argmax(-1, keepdim=True) => step_input = forward_cached(model, step_input, cache)[:, :1].argmax(-1)

# %% variant name=kv_cache_variant cell=kv_cache
@torch.no_grad()
def forward_cached(model, ids, cache):
    start = 0 if cache.k[0] is None else cache.k[0].shape[-2]
    h = lab.embed(model, ids)
    pos = start + torch.arange(ids.shape[-1])
    for layer in range(len(cache.k)):
        q, k_new, v_new = lab.layer_qkv(model, layer, h, pos)
        old_k, old_v = cache.k[layer], cache.v[layer]
        cache.k[layer] = k_new if old_k is None else torch.cat([old_k, k_new], -2)
        cache.v[layer] = v_new if old_v is None else torch.cat([old_v, v_new], -2)
        h = lab.layer_out(model, layer, h, lab.attend(q, cache.k[layer], cache.v[layer]))
    return lab.logits(model, h)


@torch.no_grad()
def greedy_generate(model, prompt_ids, max_new_tokens):
    cache = KVCache(lab.num_layers(model))
    logits = forward_cached(model, prompt_ids, cache)
    out = torch.empty(prompt_ids.shape[0], max_new_tokens, dtype=torch.long)
    for t in range(max_new_tokens):
        out[:, t] = logits[:, -1, :].argmax(dim=-1)
        if t + 1 < max_new_tokens:
            logits = forward_cached(model, out[:, t:t + 1], cache)
    return out

# %% mutant name=hash_not_chained cell=paged_blocks fails=test_block_hashes
# each block hashed on its own tokens: the same block after a different prefix would be shared
replace return [hash(tuple(int(t) for t in tokens[: (j + 1) * block_size])) for j in range(n_full)] => return [hash(tuple(int(t) for t in tokens[j * block_size: (j + 1) * block_size])) for j in range(n_full)]

# %% mutant name=partial_block_hashed cell=paged_blocks fails=test_block_hashes
replace n_full = len(tokens) // block_size => n_full = -(-len(tokens) // block_size)

# %% mutant name=block_table_not_updated_on_append cell=paged_blocks fails=test_block_manager
# a new block is allocated for the token that starts a block, but never entered in the table
replace <<<
        if offset == 0:
            table.append(self._new_block())
===
        if offset == 0:
            self._new_block()
>>>

# %% mutant name=free_releases_shared_blocks cell=paged_blocks fails=test_block_manager
# freeing a sequence frees every block it maps, even those other sequences still share
replace <<<
        for block in self.tables.pop(seq_id):
            self._drop(block)
===
        for block in self.tables.pop(seq_id):
            self.ref_count[block] = 1
            self._drop(block)
>>>

# %% mutant name=no_copy_on_write cell=paged_blocks fails=test_block_manager
# a forked sequence writes into the last block it shares
replace <<<
        elif self.ref_count[table[-1]] > 1:
            fresh = self._new_block()
            copy = (table[-1], fresh)
            self._drop(table[-1])
            table[-1] = fresh
===
>>>

# %% mutant name=copy_keeps_old_reference cell=paged_blocks fails=test_block_manager
# the copy is made but the shared block's count is not decremented
delete self._drop(table[-1])

# %% mutant name=fork_without_ref_counts cell=paged_blocks fails=test_block_manager
replace <<<
        for block in self.tables[child_id]:
            self.ref_count[block] += 1
===
>>>

# %% mutant name=shared_prefix_not_counted cell=paged_blocks fails=test_block_manager
# a shared block is reused without taking a reference
replace <<<
                block = self.block_of_hash[h]
                self.ref_count[block] += 1
===
                block = self.block_of_hash[h]
>>>

# %% variant name=paged_blocks_variant cell=paged_blocks
import hashlib
from collections import deque


def block_hashes(tokens, block_size):
    out, running = [], hashlib.sha256()
    for j in range(len(tokens) // block_size):
        running.update(",".join(str(int(t)) for t in tokens[j * block_size:(j + 1) * block_size]).encode() + b";")
        out.append(running.copy().hexdigest())
    return out


class BlockManager:
    def __init__(self, num_blocks, block_size):
        self.bs = block_size
        self.ref_count = [0] * num_blocks
        self.tables, self.sizes = {}, {}
        self.pool = deque(range(num_blocks))
        self.index = {}  # hash -> block, for live prompt blocks
        self.key = [None] * num_blocks

    def num_free(self):
        return len(self.pool)

    def _grab(self):
        if len(self.pool) == 0:
            raise MemoryError
        b = self.pool.popleft()
        self.ref_count[b] += 1
        return b

    def _unref(self, b):
        self.ref_count[b] -= 1
        if not self.ref_count[b]:
            if self.key[b] is not None:
                self.index.pop(self.key[b])
                self.key[b] = None
            self.pool.append(b)

    def add_sequence(self, seq_id, tokens):
        hashes = block_hashes(tokens, self.bs)
        reused = 0
        while reused < len(hashes) and hashes[reused] in self.index:
            reused += 1
        table = [self.index[h] for h in hashes[:reused]]
        for b in table:
            self.ref_count[b] += 1
        for h in hashes[reused:]:
            b = self._grab()
            self.index[h], self.key[b] = b, h
            table.append(b)
        while len(table) * self.bs < len(tokens):
            table.append(self._grab())
        self.tables[seq_id], self.sizes[seq_id] = table, len(tokens)
        return reused * self.bs

    def fork(self, parent_id, child_id):
        for b in self.tables[parent_id]:
            self.ref_count[b] += 1
        self.tables[child_id] = list(self.tables[parent_id])
        self.sizes[child_id] = self.sizes[parent_id]

    def append_token(self, seq_id, token):
        n, table = self.sizes[seq_id], self.tables[seq_id]
        copy = None
        if n == len(table) * self.bs:
            table.append(self._grab())
        elif self.ref_count[table[-1]] != 1:
            src = table[-1]
            table[-1] = self._grab()
            self._unref(src)
            copy = (src, table[-1])
        self.sizes[seq_id] = n + 1
        return table[-1], n % self.bs, copy

    def free(self, seq_id):
        for b in reversed(self.tables.pop(seq_id)):
            self._unref(b)
        self.sizes.pop(seq_id)

# %% mutant name=padding_slots_attended cell=paged_attention fails=test_paged_attention
# every slot of the last block is attended, also those past the sequence's end
replace k = k_pool[torch.as_tensor(table)].flatten(0, 1)[:n]  # (n, kv_heads, d) => k = k_pool[torch.as_tensor(table)].flatten(0, 1)
replace v = v_pool[torch.as_tensor(table)].flatten(0, 1)[:n] => v = v_pool[torch.as_tensor(table)].flatten(0, 1)

# %% mutant name=blocks_in_physical_order cell=paged_attention fails=test_paged_attention
# the table's blocks read in physical order, not the table's (logical) order
replace k = k_pool[torch.as_tensor(table)].flatten(0, 1)[:n]  # (n, kv_heads, d) => k = k_pool[torch.as_tensor(sorted(table))].flatten(0, 1)[:n]
replace v = v_pool[torch.as_tensor(table)].flatten(0, 1)[:n] => v = v_pool[torch.as_tensor(sorted(table))].flatten(0, 1)[:n]

# %% mutant name=gqa_heads_tiled cell=paged_attention fails=test_paged_attention
# KV heads tiled (h % kv_heads) instead of grouped (h // group)
replace k = k.repeat_interleave(group, dim=1).transpose(0, 1)  # (heads, n, d) => k = k.repeat(1, group, 1).transpose(0, 1)
replace v = v.repeat_interleave(group, dim=1).transpose(0, 1) => v = v.repeat(1, group, 1).transpose(0, 1)

# %% mutant name=no_scale cell=paged_attention fails=test_paged_attention
replace scores = (k @ q[b].unsqueeze(-1)).squeeze(-1) / math.sqrt(q.shape[-1]) => scores = (k @ q[b].unsqueeze(-1)).squeeze(-1)

# %% variant name=paged_attention_padded_batch_variant cell=paged_attention
def paged_attention(q, k_pool, v_pool, block_tables, seq_lens):
    # one padded gather for the whole batch, masked, and a single SDPA call
    bs = k_pool.shape[1]
    width = max(len(t) for t in block_tables)
    tables = torch.tensor([list(t) + [0] * (width - len(t)) for t in block_tables])
    k = k_pool[tables].flatten(1, 2).transpose(1, 2)  # (batch, kv_heads, width * bs, d)
    v = v_pool[tables].flatten(1, 2).transpose(1, 2)
    mask = torch.arange(width * bs)[None, :] < torch.tensor(seq_lens)[:, None]
    out = F.scaled_dot_product_attention(q[:, :, None], k, v, attn_mask=mask[:, None, None, :], enable_gqa=True)
    return out[:, :, 0]

# %% mutant name=paged_waste_floor cell=kv_waste fails=test_kv_waste
replace blocks = np.ceil(lengths / block_size) * block_size => blocks = np.floor(lengths / block_size) * block_size

# %% mutant name=waste_of_used_not_reserved cell=kv_waste fails=test_kv_waste
# waste divided by the tokens used instead of the slots reserved
replace return float(1 - used / (len(lengths) * max_len)), float(1 - used / blocks.sum()) => return float((len(lengths) * max_len - used) / used), float((blocks.sum() - used) / used)

# %% variant name=kv_waste_python_variant cell=kv_waste
def kv_waste(lengths, block_size, max_len):
    reserved_contiguous = max_len * len(lengths)
    reserved_paged = sum(block_size * math.ceil(n / block_size) for n in lengths)
    tokens = sum(lengths)
    return (reserved_contiguous - tokens) / reserved_contiguous, (reserved_paged - tokens) / reserved_paged

# %% mutant name=static_frees_finished_slots cell=batching fails=test_batching
# static batching that stops paying for finished requests (that would be continuous batching without refills)
replace now += step_time(len(batch), 0) => now += step_time(sum(requests[j][2] >= token for j in batch), 0)

# %% mutant name=static_waits_for_full_batch cell=batching fails=test_batching
# the engine waits until max_batch requests have arrived
replace now = max(now, requests[i][0]) => now = max(now, requests[min(i + max_batch, len(requests)) - 1][0])

# %% mutant name=joining_counted_as_decoding cell=batching fails=test_batching
replace now += step_time(len(left), sum(requests[j][1] for j in joining)) => now += step_time(len(left) + len(joining), sum(requests[j][1] for j in joining))

# %% mutant name=continuous_admits_only_when_empty cell=batching fails=test_batching
replace while i < len(requests) and requests[i][0] <= now and len(left) + len(joining) < max_batch: => while not left and i < len(requests) and requests[i][0] <= now and len(joining) < max_batch:

# %% mutant name=first_token_not_from_prefill cell=batching fails=test_batching
# a joining request's prefill iteration produces no token
replace left[j] = requests[j][2] => left[j] = requests[j][2] + 1

# %% variant name=batching_variant cell=batching
def static_batching(requests, max_batch, step_time):
    finish, t, queue = {}, 0.0, list(range(len(requests)))
    while queue:
        t = max(t, requests[queue[0]][0])
        batch = []
        while queue and len(batch) < max_batch and requests[queue[0]][0] <= t:
            batch.append(queue.pop(0))
        outs = [requests[j][2] for j in batch]
        t += step_time(0, sum(requests[j][1] for j in batch))
        times = [t]
        for _ in range(max(outs) - 1):
            t += step_time(len(batch), 0)
            times.append(t)
        for j, o in zip(batch, outs, strict=True):
            finish[j] = times[o - 1]
    return [finish[j] for j in range(len(requests))]


def continuous_batching(requests, max_batch, step_time):
    import collections

    waiting = collections.deque(range(len(requests)))
    running, finish, t = [], [0.0] * len(requests), 0.0
    remaining = [r[2] for r in requests]
    while waiting or running:
        if not running:
            t = max(t, requests[waiting[0]][0])
        new = []
        while waiting and len(running) + len(new) < max_batch and requests[waiting[0]][0] <= t:
            new.append(waiting.popleft())
        t += step_time(len(running), sum(requests[j][1] for j in new))
        for j in running + new:
            remaining[j] -= 1
            if remaining[j] == 0:
                finish[j] = t
        running = [j for j in running + new if remaining[j] > 0]
    return finish

# %% mutant name=resample_from_target cell=speculative fails=test_speculative
# after a rejection the token is drawn from p instead of the residual
replace emitted.append(int(sample(residual / residual.sum()))) => emitted.append(int(sample(p[i])))

# %% mutant name=no_bonus_token cell=speculative fails=test_speculative
delete emitted.append(int(sample(p[len(emitted)])))

# %% mutant name=residual_not_clipped cell=speculative fails=test_speculative
replace residual = torch.clamp(p[i] - q[i], min=0.0) => residual = p[i] - q[i]

# %% mutant name=ratio_inverted cell=speculative fails=test_speculative
replace ratio = p[i, token] / q[i, token] => ratio = q[i, token] / p[i, token]

# %% mutant name=greedy_acceptance cell=speculative fails=test_speculative
# accept whenever the target likes the token at least as much as the draft, never otherwise
replace if u[i] < min(1.0, float(ratio)): => if ratio >= 1:

# %% mutant name=acceptance_unclipped cell=speculative fails=test_speculative
# E_q[p/q] without the min(1, .) is always 1
replace return float((q[support] * torch.clamp(p[support] / q[support], max=1.0)).sum()) => return float((q[support] * (p[support] / q[support])).sum())

# %% variant name=unclipped_ratio_in_the_decision_variant cell=speculative
# not a mistake: for u in [0, 1), "u < p/q" and "u < min(1, p/q)" are the same event
def speculative_step(p, q, draft, u, sample):
    out = []
    for i, x in enumerate(draft.tolist() if hasattr(draft, "tolist") else draft):
        if u[i] < p[i, x] / q[i, x]:
            out.append(x)
            continue
        out.append(sample(torch.relu(p[i] - q[i]) / torch.relu(p[i] - q[i]).sum()))
        break
    else:
        out.append(sample(p[-1]))
    return [int(t) for t in out]


def expected_acceptance(p, q):
    return float(torch.minimum(p, q).sum())

# %% variant name=speculative_vectorised_variant cell=speculative
def speculative_step(p, q, draft, u, sample):
    draft = torch.as_tensor(draft, dtype=torch.long)
    gamma = len(draft)
    rows = torch.arange(gamma)
    accept = torch.as_tensor(u, dtype=p.dtype) * q[rows, draft] < p[rows, draft]
    n = gamma if bool(accept.all()) else int((~accept).nonzero()[0])
    tokens = draft[:n].tolist()
    if n == gamma:
        return tokens + [int(sample(p[gamma]))]
    residual = (p[n] - q[n]).clamp_min(0)
    return tokens + [int(sample(residual / residual.sum()))]


def expected_acceptance(p, q):
    return 1.0 - 0.5 * float((p - q).abs().sum())  # one minus the total variation distance
