import { useTitle } from "../lib/hooks";

export default function Admin() {
  useTitle("Admin");
  return <h1 tabIndex={-1}>Admin</h1>;
}
