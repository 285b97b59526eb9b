#include "trtllm/kv_cache.h"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>

namespace trtllm {
namespace {

constexpr uint64_t kRootHash = 0x6a09e667f3bcc908ull;  // chain seed: any fixed non-zero value
constexpr uint64_t kRootIdentity = 0;

// splitmix64's finalizer: a full-avalanche 64-bit mix, so nearby token ids and chain values
// spread over the whole hash space.
uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

// Hash of one full block chained on its parent's: equal hashes mean (up to collisions, which
// the token comparison catches) equal contents *and* equal prefixes, which is what makes the
// cached KV valid — attention at a position depends on every earlier token.
uint64_t hash_block(uint64_t parent_hash, const int32_t* tokens, int n) {
    uint64_t h = mix64(parent_hash);
    for (int i = 0; i < n; ++i) {
        h = mix64(h ^ (static_cast<uint64_t>(static_cast<uint32_t>(tokens[i])) + 0x9e3779b97f4a7c15ull));
    }
    return h;
}

}  // namespace

KVCacheManager::KVCacheManager(const KVCacheConfig& config) : config_(config) {
    if (config.tokens_per_block <= 0) {
        throw std::invalid_argument("KVCacheConfig.tokens_per_block must be > 0, got " +
                                    std::to_string(config.tokens_per_block));
    }
    if (config.num_blocks < 0 || config.num_blocks > std::numeric_limits<int32_t>::max()) {
        throw std::invalid_argument("KVCacheConfig.num_blocks must be in [0, 2^31 - 1], got " +
                                    std::to_string(config.num_blocks));
    }
    blocks_.resize(static_cast<size_t>(config.num_blocks));
    // Stored in reverse so allocation (pop_back) hands out block 0 first: predictable ids.
    free_.reserve(blocks_.size());
    for (int64_t i = config.num_blocks - 1; i >= 0; --i) free_.push_back(static_cast<int32_t>(i));
}

int64_t KVCacheManager::blocks_for(int64_t num_tokens) const {
    if (num_tokens <= 0) return 0;
    return (num_tokens + config_.tokens_per_block - 1) / config_.tokens_per_block;
}

KVCacheManager::Sequence& KVCacheManager::sequence(int64_t seq_id, const char* caller) {
    return const_cast<Sequence&>(std::as_const(*this).sequence(seq_id, caller));
}

const KVCacheManager::Sequence& KVCacheManager::sequence(int64_t seq_id, const char* caller) const {
    auto it = sequences_.find(seq_id);
    if (it == sequences_.end()) {
        throw std::invalid_argument(std::string("KVCacheManager::") + caller + ": unknown sequence id " +
                                    std::to_string(seq_id));
    }
    return it->second;
}

KVCacheManager::PrefixMatch KVCacheManager::match_prefix(const std::vector<int32_t>& tokens,
                                                        bool allow_reuse) const {
    PrefixMatch m{{}, kRootHash, kRootIdentity};
    if (!config_.enable_prefix_reuse || !allow_reuse || tokens.empty()) return m;
    const int tpb = config_.tokens_per_block;
    // The last token is never reused: its logits must be computed to sample the next token.
    const size_t max_blocks = (tokens.size() - 1) / static_cast<size_t>(tpb);
    for (size_t i = 0; i < max_blocks; ++i) {
        const int32_t* first = tokens.data() + i * tpb;
        const uint64_t h = hash_block(m.hash, first, tpb);
        auto it = by_hash_.find(h);
        if (it == by_hash_.end()) break;
        const Block& b = blocks_[static_cast<size_t>(it->second)];
        if (b.parent_identity != m.identity || !std::equal(first, first + tpb, b.tokens.begin(), b.tokens.end())) {
            break;  // a hash collision: different contents or prefix
        }
        m.blocks.push_back(it->second);
        m.hash = h;
        m.identity = b.identity;
    }
    return m;
}

int KVCacheManager::add_sequence(int64_t seq_id, const std::vector<int32_t>& tokens, bool allow_reuse) {
    if (sequences_.count(seq_id) != 0) {
        throw std::invalid_argument("KVCacheManager::add_sequence: sequence id " + std::to_string(seq_id) +
                                    " is already present (free it first)");
    }
    PrefixMatch m = match_prefix(tokens, allow_reuse);
    Sequence seq;
    for (int32_t id : m.blocks) {
        Block& b = blocks_[static_cast<size_t>(id)];
        if (b.ref_count == 0) lru_.erase(b.lru_pos);
        ++b.ref_count;
    }
    seq.num_hashed = static_cast<int>(m.blocks.size());
    seq.last_hash = m.hash;
    seq.last_identity = m.identity;
    seq.blocks = std::move(m.blocks);
    const int reused = seq.num_hashed * config_.tokens_per_block;
    reused_tokens_ += reused;
    sequences_.emplace(seq_id, std::move(seq));
    return reused;
}

int KVCacheManager::num_reusable_tokens(const std::vector<int32_t>& tokens, bool allow_reuse) const {
    return static_cast<int>(match_prefix(tokens, allow_reuse).blocks.size()) * config_.tokens_per_block;
}

int64_t KVCacheManager::blocks_needed_to_add(const std::vector<int32_t>& tokens, int num_tokens,
                                             bool allow_reuse) const {
    const PrefixMatch m = match_prefix(tokens, allow_reuse);
    const int64_t matched = static_cast<int64_t>(m.blocks.size());
    const int64_t from_lru = std::count_if(m.blocks.begin(), m.blocks.end(), [&](int32_t id) {
        return blocks_[static_cast<size_t>(id)].ref_count == 0;
    });
    return std::max<int64_t>(0, blocks_for(num_tokens) - matched) + from_lru;
}

int32_t KVCacheManager::allocate_block() {
    int32_t id;
    if (!free_.empty()) {
        id = free_.back();
        free_.pop_back();
    } else {
        // Callers check availability first; reaching an empty LRU here is a bookkeeping bug.
        if (lru_.empty()) throw std::logic_error("KVCacheManager: allocate_block with no available block");
        id = lru_.front();
        lru_.pop_front();
        Block& b = blocks_[static_cast<size_t>(id)];
        by_hash_.erase(b.hash);  // a cached block is always the one its hash maps to
        b.hashed = false;
        b.tokens.clear();
        ++evictions_;
    }
    blocks_[static_cast<size_t>(id)].ref_count = 1;
    return id;
}

bool KVCacheManager::reserve(int64_t seq_id, int num_tokens) {
    Sequence& seq = sequence(seq_id, "reserve");
    const int64_t needed = blocks_for(num_tokens) - static_cast<int64_t>(seq.blocks.size());
    if (needed <= 0) return true;
    if (needed > num_available_blocks()) return false;
    for (int64_t i = 0; i < needed; ++i) seq.blocks.push_back(allocate_block());
    return true;
}

int64_t KVCacheManager::blocks_needed(int64_t seq_id, int num_tokens) const {
    const Sequence& seq = sequence(seq_id, "blocks_needed");
    return std::max<int64_t>(0, blocks_for(num_tokens) - static_cast<int64_t>(seq.blocks.size()));
}

void KVCacheManager::commit(int64_t seq_id, const std::vector<int32_t>& tokens, int num_computed) {
    Sequence& seq = sequence(seq_id, "commit");
    const int tpb = config_.tokens_per_block;
    if (num_computed < 0 || static_cast<size_t>(num_computed) > tokens.size() ||
        static_cast<int64_t>(num_computed) > static_cast<int64_t>(seq.blocks.size()) * tpb) {
        throw std::invalid_argument("KVCacheManager::commit: num_computed " + std::to_string(num_computed) +
                                    " of sequence " + std::to_string(seq_id) + " exceeds its " +
                                    std::to_string(tokens.size()) + " tokens or " +
                                    std::to_string(seq.blocks.size() * tpb) + " reserved slots");
    }
    if (!config_.enable_prefix_reuse) return;
    const int num_full = num_computed / tpb;
    while (!seq.chain_broken && seq.num_hashed < num_full) {
        const int32_t id = seq.blocks[static_cast<size_t>(seq.num_hashed)];
        const int32_t* first = tokens.data() + static_cast<size_t>(seq.num_hashed) * tpb;
        const uint64_t h = hash_block(seq.last_hash, first, tpb);
        auto it = by_hash_.find(h);
        if (it == by_hash_.end()) {
            Block& b = blocks_[static_cast<size_t>(id)];
            b.hashed = true;
            b.hash = h;
            b.identity = next_identity_++;
            b.parent_identity = seq.last_identity;
            b.tokens.assign(first, first + tpb);
            by_hash_.emplace(h, id);
            seq.last_identity = b.identity;
        } else {
            const Block& cached = blocks_[static_cast<size_t>(it->second)];
            if (cached.parent_identity == seq.last_identity &&
                std::equal(first, first + tpb, cached.tokens.begin(), cached.tokens.end())) {
                // The same block was computed by another sequence meanwhile (e.g. both admitted in
                // one iteration). Keep the cached copy; ours stays unhashed and returns to the free
                // list. Our later blocks chain on the cached copy's identity, as a reuser's would.
                seq.last_identity = cached.identity;
            } else {
                // A genuine 64-bit collision: stop caching this sequence rather than risk a wrong match.
                seq.chain_broken = true;
                break;
            }
        }
        seq.last_hash = h;
        ++seq.num_hashed;
    }
}

void KVCacheManager::free_sequence(int64_t seq_id) {
    Sequence& seq = sequence(seq_id, "free_sequence");
    // Tail first (as vLLM does): within one sequence the last blocks become the least recently
    // used, so eviction takes a chain's tail before its head and keeps shared prefixes longest.
    for (auto it = seq.blocks.rbegin(); it != seq.blocks.rend(); ++it) {
        Block& b = blocks_[static_cast<size_t>(*it)];
        if (--b.ref_count > 0) continue;
        if (b.hashed) {
            b.lru_pos = lru_.insert(lru_.end(), *it);
        } else {
            free_.push_back(*it);
        }
    }
    sequences_.erase(seq_id);
}

bool KVCacheManager::has_sequence(int64_t seq_id) const { return sequences_.count(seq_id) != 0; }

const std::vector<int32_t>& KVCacheManager::block_table(int64_t seq_id) const {
    return sequence(seq_id, "block_table").blocks;
}

int64_t KVCacheManager::num_available_blocks() const {
    return static_cast<int64_t>(free_.size() + lru_.size());
}

int KVCacheManager::ref_count(int32_t block_id) const {
    if (block_id < 0 || block_id >= config_.num_blocks) {
        throw std::invalid_argument("KVCacheManager::ref_count: block id " + std::to_string(block_id) +
                                    " out of range [0, " + std::to_string(config_.num_blocks) + ")");
    }
    return blocks_[static_cast<size_t>(block_id)].ref_count;
}

KVCacheStats KVCacheManager::stats() const {
    KVCacheStats s;
    s.num_blocks = config_.num_blocks;
    s.cached_blocks = static_cast<int64_t>(lru_.size());
    s.free_blocks = num_available_blocks();
    s.used_blocks = s.num_blocks - s.free_blocks;
    s.reused_tokens = reused_tokens_;
    s.evictions = evictions_;
    return s;
}

}  // namespace trtllm
