// Leader/follower execution under tensor parallelism: rank 0 owns the requests, the scheduler,
// the KV block decisions and sampling; before each iteration it broadcasts the batch plan (the
// StepInput: token ids, positions, past/new lengths, block tables, output rows) and every
// follower runs the same op list on its shard with it. The plan carries the KV block ids, so
// every rank's cache holds the same tokens in the same blocks; the sampled tokens reach the
// followers as the next plan's input ids. Followers compute nothing else, so they cannot diverge.
#pragma once

#include <optional>

#include "trtllm/backend.h"
#include "trtllm/mpi_comm.h"

namespace trtllm {

// Leader: this iteration's plan, to every follower.
void broadcast_step(MpiComm& comm, const StepInput& step);
// Leader: no more iterations; followers return from receive_step with nullopt.
void broadcast_shutdown(MpiComm& comm);
// Follower: waits (without a deadline: the leader may be idle) for the next plan from rank 0.
std::optional<StepInput> receive_step(MpiComm& comm);

}  // namespace trtllm
