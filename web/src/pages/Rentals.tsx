import { useTitle } from "../lib/hooks";

export default function Rentals() {
  useTitle("Rentals");
  return <h1 tabIndex={-1}>Rentals</h1>;
}
