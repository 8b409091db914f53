// The gateway's counting routes: POST /v1/messages/count_tokens (Anthropic) and
// models/{model}:countTokens (Gemini), for a service of any protocol. count_tokens decides
// whether the service counts or the gateway estimates; this file moves the bytes. A count
// generates nothing: the ledger records the request with no tokens.
#include <memory>

#include "count_tokens.h"
#include "gateway_internal.h"

namespace pgi::gateway {

namespace {

struct CountExchange : Exchange {
    using Exchange::Exchange;

    const protocols::Module *caller = nullptr;

    void on_done(http::Response &r) override {
        if (!upstream_ok(r)) {
            server.respond_upstream_failure(*this, r);
            return;
        }
        server.respond(
            *this, 200,
            count_tokens::answer(*caller, count_tokens::read_count(*context.service, r.body)));
    }
};

}  // namespace

void start_count_tokens(Server::Impl &server, RequestContext &&context, nlohmann::json body,
                        const protocols::Module &caller) {
    auto &ex = static_cast<CountExchange &>(
        server.adopt(std::make_unique<CountExchange>(server, std::move(context))));
    ex.caller = &caller;
    ex.begin = [&server, &ex, &caller, body = std::move(body)]() mutable {
        // Planning may take the body apart; a route's next target needs it whole.
        nlohmann::json planned = ex.context.route != nullptr ? body : std::move(body);
        count_tokens::Plan plan = count_tokens::plan(caller, *ex.context.service, planned);
        if (!plan.request) {
            server.respond(ex, 200, count_tokens::answer(caller, plan.estimate));
            return;
        }
        if (ex.context.service->protocol == caller.protocol)
            forward_dialect_headers(ex, *plan.request);
        server.call_upstream(ex, to_http(std::move(*plan.request)), false);
    };
    guarded_start(server, ex, ex.begin);
}

}  // namespace pgi::gateway
