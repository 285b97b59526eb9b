#include "trtllm/step_broadcast.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace trtllm {
namespace {

// Two broadcasts per iteration: a fixed header (what follows and the sizes), then the plan's
// int32 arrays packed end to end.
enum Command : int64_t { kShutdown = 0, kStep = 1 };
enum Field { kCommand, kNumTokens, kNumRequests, kMaxBlocksPerSeq, kNumOutputRows, kNumFields };
using Header = std::array<int64_t, kNumFields>;

// Every array of the plan, in wire order.
template <class Step, class F>
void for_each_array(Step& step, F&& f) {
    f(step.input_ids);
    f(step.position_ids);
    f(step.past_len);
    f(step.new_len);
    f(step.token_start);
    f(step.block_table);
    f(step.output_rows);
}

}  // namespace

void broadcast_step(MpiComm& comm, const StepInput& step) {
    Header header{kStep, step.num_tokens(), step.num_requests(), step.max_blocks_per_seq,
                  static_cast<int64_t>(step.output_rows.size())};
    std::vector<int32_t> payload;
    for_each_array(step, [&](const std::vector<int32_t>& a) { payload.insert(payload.end(), a.begin(), a.end()); });
    comm.broadcast(header.data(), sizeof(Header), 0, "broadcast of the iteration header");
    comm.broadcast(payload.data(), static_cast<int64_t>(payload.size() * sizeof(int32_t)), 0,
                   "broadcast of the iteration plan");
}

void broadcast_shutdown(MpiComm& comm) {
    Header header{kShutdown, 0, 0, 0, 0};
    comm.broadcast(header.data(), sizeof(Header), 0, "broadcast of the shutdown");
}

std::optional<StepInput> receive_step(MpiComm& comm) {
    Header header{};
    comm.broadcast(header.data(), sizeof(Header), 0, "wait for the leader's next iteration", /*idle=*/true);
    if (header[kCommand] == kShutdown) return std::nullopt;
    if (header[kCommand] != kStep) {
        throw std::runtime_error("unknown leader command " + std::to_string(header[kCommand]));
    }
    StepInput step;
    step.max_blocks_per_seq = static_cast<int>(header[kMaxBlocksPerSeq]);
    step.input_ids.resize(header[kNumTokens]);
    step.position_ids.resize(header[kNumTokens]);
    step.past_len.resize(header[kNumRequests]);
    step.new_len.resize(header[kNumRequests]);
    step.token_start.resize(header[kNumRequests]);
    step.block_table.resize(header[kNumRequests] * header[kMaxBlocksPerSeq]);
    step.output_rows.resize(header[kNumOutputRows]);
    size_t total = 0;
    for_each_array(step, [&](std::vector<int32_t>& a) { total += a.size(); });
    std::vector<int32_t> payload(total);
    comm.broadcast(payload.data(), static_cast<int64_t>(total * sizeof(int32_t)), 0, "broadcast of the iteration plan");
    size_t offset = 0;
    for_each_array(step, [&](std::vector<int32_t>& a) {
        std::copy(payload.begin() + offset, payload.begin() + offset + a.size(), a.begin());
        offset += a.size();
    });
    return step;
}

}  // namespace trtllm
