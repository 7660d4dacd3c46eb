// What a client of the orders API writes with the generated TypeScript client. It is only
// type-checked (`npm run check`): when the API changes in a way that breaks clients, this
// stops compiling.
import { createClient } from "./generated/client";
import {
  cancelOrder,
  deleteOrder,
  getOrder,
  listOrders,
  payOrder,
  placeOrder,
  updateOrder,
} from "./generated/sdk.gen";
import type { InvalidRequest, Order, OrderStatus, ValidationProblem } from "./generated/types.gen";

export async function coffee(baseUrl: string, token: string): Promise<OrderStatus> {
  const client = createClient({ baseUrl, auth: () => token });

  const placed = await placeOrder({
    client,
    body: { order: [{ product: "latte", size: "big", quantity: 2 }, { product: "tea", size: "small" }] },
    headers: { "Idempotency-Key": crypto.randomUUID() },
  });
  if (placed.error !== undefined) {
    throw new Error(`not placed: ${JSON.stringify(placed.error.detail)}`);
  }
  const order: Order = placed.data;
  const etag = placed.response.headers.get("ETag") ?? "*";
  const path = { order_id: order.id };

  const read = await getOrder({ client, path, headers: { "If-None-Match": etag } });
  const changed = await updateOrder({
    client,
    path,
    body: { order: [{ product: "mocha", size: "medium" }] },
    headers: { "If-Match": etag },
  });
  if (changed.response.status === 422 && changed.error !== undefined) {
    const invalid = changed.error as InvalidRequest;
    const problems: ValidationProblem[] = invalid.detail;
    console.log(problems.map((problem) => `${problem.loc.join(".")}: ${problem.msg}`));
  }

  const paid = await payOrder({ client, path, headers: { "Idempotency-Key": crypto.randomUUID() } });
  if (paid.error !== undefined) {
    const retryAfter = paid.response.headers.get("Retry-After");
    console.log(paid.response.status, paid.error.detail, retryAfter);
  }

  const page = await listOrders({ client, query: { limit: 50, cancelled: false } });
  for (const each of page.data?.orders ?? []) {
    console.log(each.id, each.created, each.status, each.order[0]?.product);
  }
  const next = page.response.headers.get("Link");

  const cancelled = await cancelOrder({ client, path });
  await deleteOrder({ client, path });
  console.log(read.response.status, next);
  return cancelled.data?.status ?? "cancelled";
}
