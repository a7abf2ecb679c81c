// sd_cuda.cu: device helpers of the CUDA backend (device count and info, allocation, copies, event
// timers) and the library's last-error message. Launchers of the DSA ops live in one file per op.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sd_cuda_common.cuh"

static __thread char sd_cuda_errbuf[512];

extern "C" void sd_cuda_set_error(const char *expr, const char *file, int line, const char *what)
{
    snprintf(sd_cuda_errbuf, sizeof sd_cuda_errbuf, "%s at %s:%d: %s", expr, file, line, what);
}

extern "C" const char *sd_cuda_last_error(void)
{
    return sd_cuda_errbuf[0] ? sd_cuda_errbuf : "no error";
}

extern "C" int sd_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); // clear: "no device" is an answer, not a sticky fault
        return 0;
    }
    return n;
}

int sd_cuda_num_sms(void)
{
    static int n_sm = 0;
    if (n_sm == 0) {
        int dev = 0, v = 0;
        if (cudaGetDevice(&dev) == cudaSuccess &&
            cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess && v > 0)
            n_sm = v;
        else
            n_sm = 132;
    }
    return n_sm;
}

extern "C" enum sd_status sd_cuda_device_info(char *name, size_t name_len, int *n_sm, size_t *l2_bytes)
{
    int dev = 0;
    cudaDeviceProp prop;
    SD_CHECK_CUDA(cudaGetDevice(&dev));
    SD_CHECK_CUDA(cudaGetDeviceProperties(&prop, dev));
    if (name && name_len) {
        strncpy(name, prop.name, name_len - 1);
        name[name_len - 1] = 0;
    }
    if (n_sm)
        *n_sm = prop.multiProcessorCount;
    if (l2_bytes)
        *l2_bytes = (size_t)prop.l2CacheSize;
    return SD_OK;
}

extern "C" enum sd_status sd_cuda_mem_info(size_t *free_bytes, size_t *total_bytes)
{
    size_t fr = 0, to = 0;
    SD_CHECK_CUDA(cudaMemGetInfo(&fr, &to));
    if (free_bytes)
        *free_bytes = fr;
    if (total_bytes)
        *total_bytes = to;
    return SD_OK;
}

extern "C" enum sd_status sd_cuda_malloc(void **p, size_t bytes)
{
    *p = NULL;
    SD_CHECK_CUDA(cudaMalloc(p, bytes ? bytes : 1));
    return SD_OK;
}

extern "C" void sd_cuda_free(void *p)
{
    if (p)
        cudaFree(p);
}

extern "C" enum sd_status sd_cuda_memcpy_h2d(void *dst, const void *src, size_t bytes)
{
    SD_CHECK_CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
    return SD_OK;
}

extern "C" enum sd_status sd_cuda_memcpy_d2h(void *dst, const void *src, size_t bytes)
{
    SD_CHECK_CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
    return SD_OK;
}

extern "C" enum sd_status sd_cuda_memcpy_d2d(void *dst, const void *src, size_t bytes, void *stream)
{
    SD_CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, (cudaStream_t)stream));
    return SD_OK;
}

extern "C" enum sd_status sd_cuda_memset(void *p, int value, size_t bytes)
{
    SD_CHECK_CUDA(cudaMemset(p, value, bytes));
    return SD_OK;
}

extern "C" enum sd_status sd_cuda_sync(void)
{
    SD_CHECK_CUDA(cudaDeviceSynchronize());
    return SD_OK;
}

struct sd_cuda_timer {
    cudaEvent_t a, b;
};

extern "C" enum sd_status sd_cuda_timer_new(struct sd_cuda_timer **t)
{
    *t = (struct sd_cuda_timer *)calloc(1, sizeof **t);
    if (!*t)
        return SD_ERR_NOMEM;
    SD_CHECK_CUDA(cudaEventCreate(&(*t)->a));
    SD_CHECK_CUDA(cudaEventCreate(&(*t)->b));
    return SD_OK;
}

extern "C" void sd_cuda_timer_free(struct sd_cuda_timer *t)
{
    if (!t)
        return;
    cudaEventDestroy(t->a);
    cudaEventDestroy(t->b);
    free(t);
}

extern "C" enum sd_status sd_cuda_timer_start(struct sd_cuda_timer *t)
{
    SD_CHECK_CUDA(cudaEventRecord(t->a, 0));
    return SD_OK;
}

extern "C" enum sd_status sd_cuda_timer_stop(struct sd_cuda_timer *t, float *ms)
{
    SD_CHECK_CUDA(cudaEventRecord(t->b, 0));
    SD_CHECK_CUDA(cudaEventSynchronize(t->b));
    SD_CHECK_CUDA(cudaEventElapsedTime(ms, t->a, t->b));
    return SD_OK;
}
