import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// The dashboard is served on the API's origin (the local stack's port, or the
// CloudFront distribution), so API calls are relative (`/v1/...`). `npm run dev`
// proxies them to a running `make dev` stack (GPURENT_API, default :3000).
export default defineConfig({
  plugins: [react()],
  build: {
    target: "es2022",
    sourcemap: false,
    assetsDir: "assets",
    chunkSizeWarningLimit: 400,
  },
  server: {
    port: 5173,
    proxy: {
      "/v1": process.env.GPURENT_API ?? "http://127.0.0.1:3000",
      "/dev": process.env.GPURENT_API ?? "http://127.0.0.1:3000",
    },
  },
});
