// The case console's service worker: makes the console installable and lets the installed app
// open while the network is away (the page then shows its "connection lost" banner). Case data,
// the API and the live stream always go to the network, never to a cache.
const SHELL = "casebridge-console-v1";
const FILES = [
  "/console/",
  "/console/console.js",
  "/console/console.css",
  "/console/icon.svg",
  "/console/manifest.webmanifest",
  "/console/i18n/en.json",
  "/console/i18n/zh-CN.json",
  "/assets/kit/kit.js",
  "/assets/kit/kit.css",
  "/assets/kit/service.js",
  "/assets/kit/i18n/en.json",
  "/assets/kit/i18n/zh-CN.json",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(SHELL).then((cache) => cache.addAll(FILES)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith("casebridge-console-") && k !== SHELL).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin) return;
  // A case page is the console's page too (client-side route).
  const key = url.pathname.startsWith("/console/cases/") ? "/console/" : url.pathname;
  if (!FILES.includes(key)) return; // the API and the live stream: network only
  // Network first (always the newest page), the cached copy when offline.
  event.respondWith(fetch(event.request).catch(() => caches.match(key)));
});
