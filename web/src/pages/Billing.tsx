import { useTitle } from "../lib/hooks";

export default function Billing() {
  useTitle("Billing");
  return <h1 tabIndex={-1}>Billing</h1>;
}
