import { useTitle } from "../lib/hooks";

export default function Create() {
  useTitle("Create");
  return <h1 tabIndex={-1}>Create</h1>;
}
