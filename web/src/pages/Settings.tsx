import { useTitle } from "../lib/hooks";

export default function Settings() {
  useTitle("Settings");
  return <h1 tabIndex={-1}>Settings</h1>;
}
