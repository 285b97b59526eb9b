// Paged KV cache bookkeeping: fixed-size blocks, per-sequence block tables, reference-counted
// prefix reuse keyed by block content, LRU eviction of unreferenced cached blocks.
// It hands out block ids only; the executor owns the memory the ids index.
#pragma once

#include <cstdint>
#include <list>
#include <unordered_map>
#include <vector>

namespace trtllm {

struct KVCacheConfig {
    int tokens_per_block = 32;
    int64_t num_blocks = 0;
    bool enable_prefix_reuse = true;
};

struct KVCacheStats {
    int64_t num_blocks = 0;
    int64_t free_blocks = 0;        // never-hashed blocks plus evictable cached ones
    int64_t used_blocks = 0;        // referenced by at least one sequence
    int64_t cached_blocks = 0;      // unreferenced but reusable (in the LRU)
    int64_t reused_tokens = 0;      // prompt tokens served from the cache, cumulative
    int64_t evictions = 0;          // cached blocks reclaimed, cumulative
};

class KVCacheManager {
public:
    explicit KVCacheManager(const KVCacheConfig& config);

    // Starts a sequence. With prefix reuse, attaches the cached blocks that match the longest
    // run of full leading blocks of `tokens`, leaving at least the last token to compute (its
    // logits are needed). Returns the number of tokens reused (a multiple of tokens_per_block).
    // allow_reuse false: start from scratch (a request that wants the logits of every prompt token).
    int add_sequence(int64_t seq_id, const std::vector<int32_t>& tokens, bool allow_reuse = true);

    // Grows the sequence's block table to hold `num_tokens` tokens. Returns false, changing
    // nothing, when the pool (free plus evictable blocks) is too small.
    bool reserve(int64_t seq_id, int num_tokens);

    // Blocks needed beyond what the sequence holds to reach `num_tokens`.
    int64_t blocks_needed(int64_t seq_id, int num_tokens) const;

    // Dry runs for admission, changing nothing: the tokens add_sequence(tokens) would reuse, and
    // the available blocks that add_sequence(tokens) then reserve(num_tokens) would take (new
    // blocks plus matched cached blocks, which leave the LRU once referenced). They let the
    // scheduler size a first chunk and check it fits before it commits to admitting.
    int num_reusable_tokens(const std::vector<int32_t>& tokens, bool allow_reuse = true) const;
    int64_t blocks_needed_to_add(const std::vector<int32_t>& tokens, int num_tokens, bool allow_reuse = true) const;

    // The first `num_computed` of `tokens` are now in the cache: each newly full block becomes
    // reusable under the hash of its tokens and of every token before it.
    void commit(int64_t seq_id, const std::vector<int32_t>& tokens, int num_computed);

    // Releases the sequence's blocks: hashed ones stay cached (most recently used), others are freed.
    void free_sequence(int64_t seq_id);

    bool has_sequence(int64_t seq_id) const;
    const std::vector<int32_t>& block_table(int64_t seq_id) const;
    int tokens_per_block() const { return config_.tokens_per_block; }
    int64_t num_blocks() const { return config_.num_blocks; }
    int64_t num_available_blocks() const;  // free + evictable
    int ref_count(int32_t block_id) const;  // sequences holding the block
    KVCacheStats stats() const;

private:
    struct Block {
        int ref_count = 0;
        bool hashed = false;                          // registered in by_hash_ (reusable)
        uint64_t hash = 0;
        // A hashed block matches only if its tokens and its parent's identity both equal the
        // query's, so a 64-bit hash collision can never serve wrong KV: by induction the whole
        // prefix is compared, not just the last block. Identities are never reused, so a child
        // whose parent was evicted (and the id refilled) can no longer match.
        uint64_t identity = 0;
        uint64_t parent_identity = 0;
        std::vector<int32_t> tokens;                  // this block's tokens
        std::list<int32_t>::iterator lru_pos;         // valid when cached (hashed, unreferenced)
    };
    struct Sequence {
        std::vector<int32_t> blocks;
        int num_hashed = 0;                           // leading blocks already committed
        uint64_t last_hash = 0;                       // hash chain value after num_hashed blocks
        uint64_t last_identity = 0;                   // identity of the block num_hashed - 1
        bool chain_broken = false;                    // a hash collision stopped caching its blocks
    };
    struct PrefixMatch {
        std::vector<int32_t> blocks;
        uint64_t hash;
        uint64_t identity;
    };

    PrefixMatch match_prefix(const std::vector<int32_t>& tokens, bool allow_reuse) const;
    int32_t allocate_block();
    Sequence& sequence(int64_t seq_id, const char* caller);
    const Sequence& sequence(int64_t seq_id, const char* caller) const;
    int64_t blocks_for(int64_t num_tokens) const;

    KVCacheConfig config_;
    std::vector<Block> blocks_;
    std::vector<int32_t> free_;                        // never-hashed free blocks
    std::list<int32_t> lru_;                           // cached blocks, least recently used first
    std::unordered_map<uint64_t, int32_t> by_hash_;
    std::unordered_map<int64_t, Sequence> sequences_;
    uint64_t next_identity_ = 1;                       // 0 is the root, parent of first blocks
    int64_t reused_tokens_ = 0, evictions_ = 0;
};

}  // namespace trtllm
